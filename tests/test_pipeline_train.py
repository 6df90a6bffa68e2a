"""train_from_recipe and `negotiax train` end to end: a tiny Llama with the real tokenizer and real data."""
from __future__ import annotations

import json

import pytest
import torch

from negotiax.cli import main as cli_main
from negotiax.recipe import load_recipe
from negotiax.train.checkpoint import valid_checkpoints
from negotiax.train.tracker import read_metrics
from negotiax.pipeline import split_holdout, train_from_recipe


@pytest.fixture(scope="module")
def tiny_backbone_dir(tmp_path_factory, smol_tokenizer):
    """A 3-layer Llama with SmolLM2's vocabulary, saved like a hub checkpoint (nothing downloads)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    folder = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def overrides(backbone, data_dir, out, *extra):
    return [f"output_dir={out}", f"model.name_or_path={backbone}", "model.device=cpu", "model.dtype=float32",
            f"data.data_dir={data_dir}", "data.train_limit=24", "data.max_length=64", "data.batch_size=2",
            "circuit.rank=4", "circuit.head_dim=4", "train.steps=4", "train.save_every=2", "train.eval_holdout=4",
            "train.warmup_steps=1", "train.log_every=1", "train.progress=false", *extra]


def test_recipe_run_writes_circuit_checkpoints_metrics_and_skips_when_done(tiny_backbone_dir, data_dir, tmp_path):
    recipe = load_recipe("configs/quick.yaml", overrides(tiny_backbone_dir, data_dir, tmp_path / "run"))
    run_dir = train_from_recipe(recipe)
    assert (run_dir / "circuit" / "circuit.json").is_file()
    assert [p.name for p in valid_checkpoints(run_dir / "checkpoints")] == ["step-000002", "step-000004"]
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["finished"] and set(summary["eval_ce_before"]) == {"helpful", "harmless", "honest"}
    steps = [r["step"] for r in read_metrics(run_dir) if "lr" in r]
    assert steps == [1, 2, 3, 4]
    weights = (run_dir / "circuit" / "circuit.safetensors").stat().st_mtime_ns
    train_from_recipe(recipe)  # finished: nothing is recomputed
    assert (run_dir / "circuit" / "circuit.safetensors").stat().st_mtime_ns == weights


def test_pair_ablation_loads_only_its_objectives(tiny_backbone_dir, data_dir, tmp_path):
    recipe = load_recipe("configs/quick.yaml", overrides(tiny_backbone_dir, data_dir, tmp_path / "pair",
                                                         "circuit.objectives=[helpful,honest]", "train.steps=2"))
    run_dir = train_from_recipe(recipe)
    record = next(r for r in read_metrics(run_dir) if "lr" in r)
    assert "honest/ce" in record and not any(k.startswith("harmless") for k in record)
    meta = json.loads((run_dir / "circuit" / "circuit.json").read_text())
    assert meta["circuit"]["objectives"] == ["helpful", "honest"]


def test_cli_trains_and_base_variant_trains_nothing(tiny_backbone_dir, data_dir, tmp_path):
    args = overrides(tiny_backbone_dir, data_dir, tmp_path / "cli", "train.steps=1", "train.eval_holdout=0")
    assert cli_main(["train", "--config", "configs/quick.yaml", *args]) == 0
    assert (tmp_path / "cli" / "circuit" / "circuit.safetensors").is_file()
    base = overrides(tiny_backbone_dir, data_dir, tmp_path / "base", "circuit.variant=base")
    assert cli_main(["train", "--config", "configs/quick.yaml", *base]) == 0
    assert not (tmp_path / "base" / "circuit").exists()
    assert cli_main(["train", "--config", "configs/quick.yaml", "train.schedule=wavy"]) == 2  # clear error


def test_holdout_split_is_seeded_and_disjoint():
    rows = list(range(100))
    train, held = split_holdout(rows, 10, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and len(train) == 90
    assert split_holdout(rows, 10, seed=3) == (train, held)
    assert split_holdout(rows, 10, seed=4)[1] != held
