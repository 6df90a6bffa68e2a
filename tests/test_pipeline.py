"""`negotiax run` end to end on a tiny model and a few real rows: every artefact, and resume."""
import json

import pytest
import torch

from negotiax.cli import main


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, smol_tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=smol_tokenizer.eos_token_id, bos_token_id=smol_tokenizer.bos_token_id)
    folder = tmp_path_factory.mktemp("tiny-backbone")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def run_args(backbone, out, data_dir, cache):
    return ["run", "--config", "configs/quick.yaml", f"output_dir={out}", f"model.name_or_path={backbone}",
            f"data.data_dir={data_dir}", "data.train_limit=16", "data.test_limit=3", "data.batch_size=2",
            "data.max_length=96", "train.steps=3", "train.save_every=2", "train.eval_holdout=2", "train.log_every=1",
            "train.progress=false", "generate.max_new_tokens=6", "generate.batch_size=4", "eval.n_boot=50",
            "eval.max_offline_examples=3", f"eval.cache_path={cache}", "circuit.rank=4", "circuit.head_dim=4",
            "eval.metrics=[refusal,lexical,mc,nll]", "eval.judges={}"]


def test_run_writes_every_artefact_and_resumes(tiny_backbone, tmp_path, data_dir, caplog):
    out = tmp_path / "run"
    assert main(run_args(tiny_backbone, out, data_dir, tmp_path / "cache.sqlite")) == 0
    for name in ["config.yaml", "provenance.json", "circuit/circuit.safetensors", "circuit/circuit.json",
                 "metrics.jsonl", "train_summary.json", "generations/base.jsonl", "generations/negotiax.jsonl",
                 "eval/base/results.json", "eval/negotiax/results.md", "eval/negotiax/results.csv",
                 "negotiation.json", "summary.json", "report/report.md", "report/report.html",
                 "report/metrics.png", "report/training.png", "report/negotiation.png"]:
        assert (out / name).is_file(), name
    assert list((out / "checkpoints").iterdir())
    gens = [json.loads(x) for x in (out / "generations" / "negotiax.jsonl").read_text().splitlines()]
    assert len(gens) == 9 and {g["objective"] for g in gens} == {"helpful", "harmless", "honest"}
    summary = json.loads((out / "summary.json").read_text())
    for system in ("base", "negotiax"):
        metrics = summary["metrics"][system]
        for name in ("refusal_harmful", "over_refusal_benign", "MC1", "MC2"):
            assert metrics[name]["n"] > 0 and metrics[name]["ci_low"] <= metrics[name]["value"] <= metrics[name]["ci_high"]
    alpha = summary["negotiation"]
    assert set(alpha) == {"benign", "harmful", "honest"} and alpha["harmful"]["expected"] == "harmless"
    for entry in alpha.values():
        for reading in ("decision", "prompt", "answer"):
            assert abs(sum(entry[reading].values()) - 1) < 1e-4
        assert 0 <= entry["routing_accuracy"] <= 1
    html = (out / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and "refusal_harmful" in html  # self-contained
    md = (out / "report" / "report.md").read_text()
    assert md.index("## Did it work?") < md.index("## All metrics")

    # Re-running the same command resumes: nothing is trained, generated or evaluated again.
    before = {p: p.stat().st_mtime_ns for p in [out / "generations" / "base.jsonl", out / "eval" / "base" / "results.json",
                                                 out / "circuit" / "circuit.safetensors"]}
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(run_args(tiny_backbone, out, data_dir, tmp_path / "cache.sqlite")) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert "already evaluated" in caplog.text and "skipping training" in caplog.text


def test_run_rejects_base_variant(tmp_path):
    assert main(["run", "--config", "configs/quick.yaml", "circuit.variant=base", f"output_dir={tmp_path}"]) == 2


def test_preference_applies_to_the_circuit_only(tiny_backbone, tmp_path, data_dir):
    out = tmp_path / "run"
    args = run_args(tiny_backbone, out, data_dir, tmp_path / "cache.sqlite") + ["generate.preference={harmless: 2.0}"]
    assert main(args) == 0
    base = json.loads((out / "eval" / "base" / "results.json").read_text())
    trained = json.loads((out / "eval" / "negotiax" / "results.json").read_text())
    assert base["decoding"]["preference"] == {}
    assert trained["decoding"]["preference"] == {"harmless": 2.0}
    # MC/NLL were scored under the same beta as the generations, and results.json says so
    assert base["circuit_preference"] is None
    assert trained["circuit_preference"] == {"helpful": 0.0, "harmless": 2.0, "honest": 0.0}


def test_run_with_another_recipe_stops_before_touching_the_run(tmp_path):
    from negotiax.config import save_config
    from negotiax.fingerprint import SettingsChangedError
    from negotiax.recipe import load_recipe
    from negotiax.pipeline import check_recipe, run

    out = tmp_path / "run"
    out.mkdir()
    save_config(load_recipe("configs/quick.yaml", [f"output_dir={out}"]), out / "config.yaml")
    before = (out / "config.yaml").read_text()
    changed = load_recipe("configs/quick.yaml", [f"output_dir={out}", "train.lr=0.02", "generate.max_new_tokens=9"])
    with pytest.raises(SettingsChangedError, match=r"generate\.max_new_tokens: 48 -> 9; train\.lr: 0\.01 -> 0\.02"):
        run(changed)
    assert (out / "config.yaml").read_text() == before and sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    # keys that change no number (name, logging, checkpoint cadence, caches) are not a different recipe
    check_recipe(load_recipe("configs/quick.yaml", [f"output_dir={out}", "name=other", "train.log_every=1",
                                                    "train.save_every=3", "eval.cache_path=null"]), out)


def train_args(backbone, out, data_dir, *extra):
    return ["train", *extra, "--config", "configs/quick.yaml", f"output_dir={out}", f"model.name_or_path={backbone}",
            f"data.data_dir={data_dir}", "data.train_limit=16", "data.batch_size=2", "data.max_length=96",
            "train.steps=2", "train.warmup_steps=0", "train.eval_holdout=0", "train.progress=false",
            "circuit.rank=4", "circuit.head_dim=4"]


def test_train_stops_on_changed_settings_fresh_retrains_same_recipe_reuses(tiny_backbone, tmp_path, data_dir,
                                                                           caplog):
    out = tmp_path / "run"
    weights = out / "circuit" / "circuit.safetensors"
    assert main(train_args(tiny_backbone, out, data_dir) + ["train.lr=0.003"]) == 0
    first, mtime = weights.read_bytes(), weights.stat().st_mtime_ns

    caplog.clear()
    assert main(train_args(tiny_backbone, out, data_dir) + ["train.lr=0.01"]) == 2
    assert "changed: train.lr: 0.003 -> 0.01." in caplog.text and "--fresh" in caplog.text
    assert weights.stat().st_mtime_ns == mtime and not list(tmp_path.glob("run.old-*"))

    caplog.clear()  # the same recipe (logging keys aside) reuses the finished training
    with caplog.at_level("INFO"):
        assert main(train_args(tiny_backbone, out, data_dir) + ["train.lr=0.003", "train.log_every=1"]) == 0
    assert "skipping training" in caplog.text and weights.stat().st_mtime_ns == mtime

    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(train_args(tiny_backbone, out, data_dir, "--fresh") + ["train.lr=0.01"]) == 0
    old = list(tmp_path.glob("run.old-*"))
    assert len(old) == 1 and (old[0] / "circuit" / "circuit.safetensors").read_bytes() == first
    assert f"renamed to {old[0]}" in caplog.text
    assert weights.read_bytes() != first  # retrained with the new lr
    assert json.loads((out / "train_fingerprint.json").read_text())["values"]["train.lr"] == 0.01


def test_run_compares_with_sft_lora_and_sweeps_the_preference(tiny_backbone, tmp_path, data_dir):
    out = tmp_path / "run"
    args = run_args(tiny_backbone, out, data_dir, tmp_path / "cache.sqlite") + [
        "run.compare=[sft-lora]", "train.sft_lora.r=2", "run.preference_sweep={harmless: [-4, 4]}"]
    assert main(args) == 0
    sft = json.loads((out / "sft-lora" / "train_summary.json").read_text())
    circuit = json.loads((out / "train_summary.json").read_text())
    assert sft["variant"] == "sft-lora" and sft["steps"] == circuit["steps"] == 3
    assert (out / "sft-lora" / "lora" / "adapter_model.safetensors").is_file()
    assert not (out / "sft-lora" / "circuit").exists()
    # Its own answers, scored like the others, and a column of the report with its training cost.
    assert (out / "generations" / "sft-lora.jsonl").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["metrics"]) == ["base", "negotiax", "sft-lora"]
    assert summary["training"]["sft-lora"]["throughput"]["tokens_per_s"] > 0
    md = (out / "report" / "report.md").read_text()
    assert "sft-lora − base" in md and "training tokens/s" in md
    # The preference sweep decodes the harmful and benign prompts again at each beta, with the circuit.
    points = summary["preference_sweep"]
    assert [(p["objective"], p["beta"]) for p in points] == [("harmless", -4.0), ("harmless", 0.0), ("harmless", 4.0)]
    swept = [json.loads(x) for x in (out / "generations" / "negotiax.harmless+4.jsonl").read_text().splitlines()]
    assert {r["objective"] for r in swept} == {"harmless", "helpful"} and len(swept) == 6
    assert all(p["refusal_harmful"]["n"] == 3 for p in points)
    assert "Preference β moves the answers" in md
