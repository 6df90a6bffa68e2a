"""`negotiax ablate` on a tiny model saved to disk (train + generate + evaluate per entry), and its grid."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from negotiax.cli import main as cli_main
from negotiax.experiments.ablate import AblateConfig, grid
from test_experiments_sweep import tiny_vocab_model


def test_grid_expands_pairs_sweeps_and_orders_branched():
    cfg = AblateConfig(variants=["branched", "negotiax", "A1", "A2", "A3"], layers_sweep=[0, 2], ranks_sweep=[8])
    names = [e.name for e in grid(cfg)]
    assert names == ["pathways", "branched", "negotiax", "A1", "A2", "A3 help+harm", "A3 help+honest",
                     "A3 harm+honest", "negotiax L0", "negotiax L2", "negotiax r8"]
    entries = {e.name: e for e in grid(cfg)}
    assert entries["A3 help+honest"].circuit == {"variant": "negotiax", "objectives": ["helpful", "honest"]}
    assert entries["A1"].circuit["generic"] and entries["A2"].circuit["frozen"]
    assert [e.name for e in grid(AblateConfig(variants=["branched", "pathways"]))] == ["pathways", "branched"]
    with pytest.raises(ValueError, match="variants"):
        AblateConfig(variants=["lora"])


def test_entries_of_a_gated_recipe_keep_the_gate_only_where_there_is_a_negotiation(tmp_path):
    """A recipe with hard routing (circuit.gate): its baselines and pathway-only ablations have no alpha to route
    by, so they are built without the gate instead of failing; the negotiating entries keep it."""
    from negotiax.experiments.ablate import entry_recipe
    from negotiax.pipeline import sft_lora_recipe
    from negotiax.recipe import load_recipe

    recipe = load_recipe("configs/quick.yaml", ["circuit.gate=0.6"])
    gates = {e.name: entry_recipe(recipe, e, tmp_path).circuit.gate
             for e in grid(AblateConfig(variants=["base", "pathways", "branched", "mac", "negotiax", "A1", "sft-lora"]))}
    assert gates == {"base": None, "pathways": None, "branched": None, "mac": 0.6, "negotiax": 0.6, "A1": 0.6,
                     "sft-lora": None}
    assert sft_lora_recipe(recipe).circuit.gate is None and recipe.circuit.gate == 0.6


@pytest.fixture
def recipe_file(tmp_path, smol_tokenizer, data_dir):
    model = tiny_vocab_model(smol_tokenizer)
    model.generation_config.eos_token_id = smol_tokenizer.eos_token_id
    model.save_pretrained(tmp_path / "tiny")
    smol_tokenizer.save_pretrained(tmp_path / "tiny")
    recipe = {
        "name": "tiny", "model": {"name_or_path": str(tmp_path / "tiny"), "device": "cpu", "dtype": "float32"},
        "circuit": {"rank": 4, "head_dim": 8},
        # A small harmless file and no overlap scan keep the data loads fast.
        "data": {"data_dir": str(data_dir), "train_limit": 8, "max_length": 48, "batch_size": 2, "test_limit": 2,
                 "drop_test_overlap": False,
                 "train": {"harmless": {"path": "safety_tuned_llamas/safety_only_data_Instructions.json",
                                        "format": "alpaca"}}},
        "train": {"steps": 2, "lr": 0.05, "warmup_steps": 0, "save_every": 0, "progress": False},
        "generate": {"max_new_tokens": 2, "batch_size": 4},
        "eval": {"metrics": ["refusal", "mc", "nll"], "cache_path": None, "n_boot": 50},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_ablate_cli_trains_evaluates_and_tabulates(recipe_file, tmp_path):
    out = tmp_path / "ablate"
    rc = cli_main(["ablate", "--recipe", str(recipe_file), "--output-dir", str(out),
                   "variants=[base,branched,negotiax,sft-lora]"])
    assert rc == 0
    result = json.loads((out / "ablation.json").read_text())
    names = [e["name"] for e in result["entries"]]
    assert names == ["base", "pathways", "branched", "negotiax", "sft-lora"]
    entries = {e["name"]: e for e in result["entries"]}
    assert entries["base"]["params"] == 0 and entries["base"]["circuit_dir"] is None
    assert entries["branched"]["circuit_dir"] == entries["pathways"]["circuit_dir"]  # reuses the pathways circuit
    assert entries["negotiax"]["params"] > entries["pathways"]["params"] > 0
    # sft-lora: LoRA weights on the backbone, no circuit; its parameter count is LoRA's, its speed measured.
    assert (out / "sft-lora" / "lora").is_dir() and entries["sft-lora"]["circuit_dir"] is None
    assert entries["sft-lora"]["params"] > 0 and entries["sft-lora"]["train_tokens_per_s"] > 0
    assert (out / "negotiax" / "circuit" / "circuit.json").is_file() and not (out / "branched" / "circuit").exists()
    for name in names:
        m = entries[name]["metrics"]
        assert m["MC2"]["n"] == 2 and m["MC2"]["ci_low"] <= m["MC2"]["value"] <= m["MC2"]["ci_high"]
        assert "refusal_harmful" in m
    # Different circuits give different likelihoods; branched combines the pathways' branches.
    nll = {n: entries[n]["metrics"]["NLL/helpful"]["value"] for n in names}
    assert len(set(nll.values())) == 5
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["entry"] for r in rows] == names and rows[0]["MC2_ci_low"] != ""
    table = (out / "ablation.md").read_text()
    assert "| branched |" in table and "(n=2)" in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # A second run reuses every finished entry (no retraining, same numbers).
    before = (out / "negotiax" / "circuit" / "circuit.safetensors").stat().st_mtime
    assert cli_main(["ablate", "--recipe", str(recipe_file), "--output-dir", str(out),
                     "variants=[base,branched,negotiax,sft-lora]"]) == 0
    assert (out / "negotiax" / "circuit" / "circuit.safetensors").stat().st_mtime == before
    assert json.loads((out / "ablation.json").read_text())["entries"][3]["metrics"] == entries["negotiax"]["metrics"]
