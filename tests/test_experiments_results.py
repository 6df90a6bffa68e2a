"""`negotiax results`: the grid's order (key rows first), a tiny resumable run end to end, and docs/results
whose numbers are checked against the runs' own per-prompt scores by hand."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from negotiax.cli import main as cli_main
from negotiax.experiments.results import SUMMARY_END, SUMMARY_START, ResultsConfig, entries
from test_experiments_ablate import recipe_file  # noqa: F401 (the tiny recipe fixture)


def test_entries_put_key_rows_first_then_seeds_then_sweeps():
    cfg = ResultsConfig(variants=["base", "negotiax", "sft-lora", "pathways", "branched", "A3"], seeds=[1, 2],
                        seed_variants=["negotiax", "sft-lora"], layers_sweep=[3], ranks_sweep=[8])
    got = entries(cfg)
    assert [e.name for e in got] == ["base", "negotiax", "sft-lora", "pathways", "branched", "A3 help+harm",
                                     "A3 help+honest", "A3 harm+honest", "negotiax s1", "sft-lora s1",
                                     "negotiax s2", "sft-lora s2", "negotiax L3", "negotiax r8"]
    seeded = {e.name: e for e in got}
    assert seeded["sft-lora s2"].kind == "sft-lora" and seeded["sft-lora s2"].seed == 2
    assert seeded["negotiax"].seed is None and seeded["negotiax"].kind == "negotiax"
    with pytest.raises(ValueError, match="seed_variants"):
        ResultsConfig(variants=["base"], seed_variants=["negotiax"])
    with pytest.raises(ValueError, match="stages"):
        ResultsConfig(stages=["ablate", "plots"])


def _mean_change(before: dict, after: dict) -> float:
    """after - before over the prompts both were scored on, from the per-prompt values (by hand)."""
    a, b = before["items"]["values"], after["items"]["values"]
    ids = sorted(set(a) & set(b))
    return float(np.mean([b[i] for i in ids]) - np.mean([a[i] for i in ids])) * float(before["items"]["scale"])


def test_results_runs_a_tiny_grid_and_writes_docs(recipe_file, tmp_path):  # noqa: F811
    out, docs = tmp_path / "run", tmp_path / "docs"
    args = ["results", "--output-dir", str(out), f"recipe={recipe_file}", f"docs_dir={docs}", "stages=[ablate]",
            "variants=[base,negotiax,sft-lora]", "seeds=[1]", "seed_variants=[negotiax,sft-lora]"]
    assert cli_main(args) == 0
    ablation = json.loads((out / "ablate" / "ablation.json").read_text())
    rows = {e["name"]: e for e in ablation["entries"]}
    assert list(rows) == ["base", "negotiax", "sft-lora", "negotiax s1", "sft-lora s1"]
    assert rows["negotiax s1"]["seed"] == 1 and rows["negotiax"]["seed"] == 0
    assert (out / "ablate" / "sft-lora_s1" / "lora").is_dir()  # a seeded sft-lora row is still LoRA SFT
    seed0 = (out / "ablate" / "negotiax" / "circuit" / "circuit.safetensors").read_bytes()
    seed1 = (out / "ablate" / "negotiax_s1" / "circuit" / "circuit.safetensors").read_bytes()
    assert seed0 != seed1

    readme = (docs / "README.md").read_text()
    assert "## Headline comparisons" in readme and "## Ablation table" in readme and "## Seeds" in readme
    assert "negotiax vs pathways (negotiation against naive (uniform) fusion of the same pathways): not run yet" in readme
    summary = (docs / "summary.md").read_text().splitlines()
    assert len(summary) == 3 and summary[0] == "- NegotiaX vs naive fusion (`pathways`): not run yet."
    readme_file = tmp_path / "README.md"  # the main README's summary block is filled from summary.md
    readme_file.write_text(f"intro\n{SUMMARY_START}\nold line\n{SUMMARY_END}\noutro\n")
    assert cli_main(args + [f"summary_readme={readme_file}", "--report-only"]) == 0
    assert readme_file.read_text() == f"intro\n{SUMMARY_START}\n" + "\n".join(summary) + f"\n{SUMMARY_END}\noutro\n"
    in_short = readme.split("## In short")[1].split("##")[0]
    assert "**negotiax vs base**" in in_short and "**negotiax vs A1**: not run yet." in in_short
    heads = list(csv.DictReader((docs / "headline.csv").open()))
    mc2 = next(h for h in heads if h["comparison"] == "negotiax vs base" and h["metric"] == "MC2")
    base = json.loads((out / "ablate" / "base" / "eval" / "results.json").read_text())["metrics"]["MC2"]
    nx = json.loads((out / "ablate" / "negotiax" / "eval" / "results.json").read_text())["metrics"]["MC2"]
    assert float(mc2["change"]) == pytest.approx(_mean_change(base, nx), abs=1e-9)
    assert float(mc2["ci_low"]) <= float(mc2["change"]) <= float(mc2["ci_high"])
    # Over seeds: negotiax's two seeds against base's one run, the seed means by hand.
    nx1 = json.loads((out / "ablate" / "negotiax_s1" / "eval" / "results.json").read_text())["metrics"]["MC2"]
    assert mc2["seeds"] == "2 vs 1"
    assert float(mc2["seeds_change"]) == pytest.approx((_mean_change(base, nx) + _mean_change(base, nx1)) / 2, abs=1e-9)
    assert {h["seeds"] for h in heads if h["comparison"] == "negotiax vs sft-lora"} == {"2 vs 2"}
    seeds = {r["entry"]: r for r in csv.DictReader((docs / "seeds.csv").open())}
    values = [rows[n]["metrics"]["MC2"]["value"] for n in ("negotiax", "negotiax s1")]
    assert seeds["negotiax"]["seeds"] == "0, 1"
    mean, sd = (values[0] + values[1]) / 2, abs(values[0] - values[1]) / math.sqrt(2)  # two seeds, by hand
    assert seeds["negotiax"]["MC2"].startswith(f"{mean:.1f} ± {sd:.1f}")

    # Report only, on a larger grid: nothing is trained, the missing rows are listed and left empty.
    wall = (out / "wall.jsonl").read_text()
    assert cli_main(args[:-3] + ["variants=[base,negotiax,sft-lora,pathways]", "seeds=[1]",
                                 "seed_variants=[negotiax,sft-lora]", "--report-only"]) == 0
    assert (out / "wall.jsonl").read_text() == wall and not (out / "ablate" / "pathways").exists()
    readme = (docs / "README.md").read_text()
    assert "**Not run yet (1 of 6 grid entries):** pathways." in readme
    table = {r["entry"]: r for r in csv.DictReader((docs / "ablation.csv").open())}
    assert table["pathways"]["params"] == "not run" and table["pathways"]["MC2"] == ""


def test_results_stages_use_the_grids_circuits_and_reuse_finished_work(recipe_file, tmp_path, data_dir):  # noqa: F811
    out, docs = tmp_path / "run", tmp_path / "docs"
    tiny = str(recipe_file.parent / "tiny")
    common = ["results", "--output-dir", str(out), f"recipe={recipe_file}", f"docs_dir={docs}",
              "variants=[base,negotiax]", "seeds=[]", "seed_variants=[negotiax]"]
    probe = "{n_harmful: 2, n_benign: 2, n_honest: 2, n_helpful: 2, max_new_tokens: 2, batch_size: 4, n_boot: 50}"
    stages = [f"sweep.model={tiny}", "sweep.device=cpu", f"sweep.data.data_dir={data_dir}", "sweep.betas=[-4,0,4]",
              "sweep.objectives=[harmless]", "sweep.mute=false", "sweep.include_base=false", f"sweep.probe={probe}",
              f"interpret.model={tiny}", "interpret.device=cpu", f"interpret.data.data_dir={data_dir}",
              "interpret.analyses=[heatmap,blind_spots]", "interpret.n_prompts=2", f"interpret.probe={probe}",
              f"profile.model={tiny}", "profile.device=cpu", "profile.variants=[base,negotiax]",
              "profile.circuit={rank: 4, head_dim: 8}", "profile.batch_sizes=[1]", "profile.prompt_lengths=[8]",
              "profile.new_tokens=2", "profile.repeats=1", "profile.train_steps=1", "profile.train_length=16"]
    assert cli_main(common + stages) == 0
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert sweep["circuit_dir"] == str(out / "ablate" / "negotiax" / "circuit")  # the grid's circuit
    assert sweep["objectives"] == ["harmless"]
    assert [p["label"] for p in sweep["points"]] == ["beta=0", "harmless=-4", "harmless=4"]
    profile = json.loads((out / "profile" / "profile.json").read_text())
    assert profile["settings"]["circuit_dirs"]["negotiax"] == str(out / "ablate" / "negotiax" / "circuit")
    compute = {r["variant"]: r for r in csv.DictReader((docs / "compute.csv").open())}
    nx = next(r for r in profile["inference"] if r["variant"] == "negotiax")
    base = next(r for r in profile["inference"] if r["variant"] == "base")
    assert float(compute["negotiax"]["decode ×base"]) == pytest.approx(
        nx["decode_tokens_per_s"] / base["decode_tokens_per_s"])
    for png in ("tradeoff.png", "sweep.png", "interpret_heatmap.png"):
        assert (docs / png).read_bytes()[:4] == b"\x89PNG", png
    assert "## Blind spots" in (docs / "README.md").read_text()
    # Same settings: every stage is reused (nothing appended to wall.jsonl but the grid's reused entries).
    stamp = (out / "sweep" / "sweep.json").stat().st_mtime
    assert cli_main(common + stages) == 0
    assert (out / "sweep" / "sweep.json").stat().st_mtime == stamp
    # A changed stage setting reruns that stage.
    assert cli_main(common + [s if not s.startswith("sweep.betas") else "sweep.betas=[0,4]" for s in stages]) == 0
    assert [p["label"] for p in json.loads((out / "sweep" / "sweep.json").read_text())["points"]] == \
        ["beta=0", "harmless=4"]


def test_training_speeds_sentence_gives_ratios_to_sft_lora():
    from negotiax.experiments.results import _training_speeds

    compute = [{"variant": "base", "profile train tok/s": None},
               {"variant": "negotiax", "profile train tok/s": 300.0}, {"variant": "negotiax", "profile train tok/s": 300.0},
               {"variant": "sft-lora", "profile train tok/s": 200.0}]
    text = _training_speeds(compute)[0]
    assert text.split(": ", 1)[1].split(". ", 1)[0] == "negotiax 300 (1.50× sft-lora); sft-lora 200"  # base: none
    assert _training_speeds([{"variant": "base", "profile train tok/s": None}]) == []
    assert "×" not in _training_speeds([{"variant": "negotiax", "profile train tok/s": 300.0}])[0]
