"""`negotiax interpret` on a tiny model with real prompts: mask-aware pooling, trajectories, heatmap,
geometry against random baselines, blind spots, interventions (muting zeroes α), figures."""
from __future__ import annotations

import json

import pytest
import torch

from negotiax import CircuitConfig, attach
from negotiax.data import DataConfig
from negotiax.experiments import geometry, routing
from negotiax.experiments.common import clean, jsonable
from negotiax.io import write_json
from negotiax.experiments.interpret import InterpretConfig, interpret, write_figures
from negotiax.experiments.probe import ProbeConfig
from negotiax.experiments.trajectories import pooled_hidden_states
from test_experiments_sweep import perturb, tiny_vocab_model


def test_pooling_ignores_padding(smol_tokenizer):
    model = tiny_vocab_model(smol_tokenizer)
    short, long = "Hi there", "A much longer prompt that forces padding on the short one in a batch"
    alone = pooled_hidden_states(model, smol_tokenizer, [short])
    batched = pooled_hidden_states(model, smol_tokenizer, [short, long])
    assert batched.shape == (4, 2, 32)
    torch.testing.assert_close(batched[:, 0], alone[:, 0], rtol=1e-4, atol=1e-5)


def test_geometry_baselines_and_overlap():
    a = torch.randn(64, 4)
    assert geometry.overlap(a, a) == pytest.approx(1.0)
    assert geometry.overlap(a, a @ torch.randn(4, 4)) == pytest.approx(1.0)  # same column space
    e = torch.eye(64)
    assert geometry.overlap(e[:, :4], e[:, 4:8]) == pytest.approx(0.0, abs=1e-12)
    base = geometry.random_overlap(64, 4, draws=200)
    assert base["mean"] == pytest.approx(4 / 64, rel=0.3)  # E[cos^2] = r/d for random subspaces
    cos = geometry.random_cosine(256, draws=2000)
    assert cos["mean_abs"] == pytest.approx((2 / (torch.pi * 256)) ** 0.5, rel=0.1)


def test_entropy_and_misrouting():
    a = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.8, 0.1]])
    ent = routing.entropy(a)
    assert ent[0] == pytest.approx(0.0, abs=1e-6) and ent[1] == pytest.approx(1.0)
    spots = routing.blind_spots({"harmful": a}, {"harmful": ["x", "y", "z"]}, ["helpful", "harmless", "honest"], top_k=2)
    s = spots["harmful"]
    assert s["expected"] == "harmless" and s["misrouted_rate"] == pytest.approx(2 / 3)
    assert s["uncertain_rate"] == pytest.approx(1 / 3) and s["most_uncertain"][0]["prompt"] == "y"
    assert {r["prompt"] for r in s["misrouted"]} == {"x", "y"}


@pytest.fixture(scope="module")
def result(smol_tokenizer, data_dir):
    model = tiny_vocab_model(smol_tokenizer)
    cfg = InterpretConfig(n_prompts=6, n_trajectory=4, batch_size=4, random_draws=20,
                          data=DataConfig(data_dir=str(data_dir)),
                          probe=ProbeConfig(n_harmful=2, n_benign=2, n_honest=2, n_helpful=2, max_new_tokens=2, n_boot=20))
    with attach(model, CircuitConfig(variant="negotiax", rank=4, head_dim=8)) as a:
        perturb(a, scale=0.05)
        return clean(interpret(model, smol_tokenizer, a, cfg))


def test_interpret_numbers(result):
    assert result["prompt_counts"] == {"harmful": 6, "benign": 6, "honest": 6}
    heat = result["heatmap"]
    for g, row in heat.items():
        assert row["n"] == 6 and sum(row["mean"].values()) == pytest.approx(1.0, abs=1e-5)
    # The circuit sits in layer 1: hidden states up to its input are untouched, its output moves.
    shifts = [e["groups"]["harmful"]["shift"] for e in result["trajectories"]["layers"]]
    assert shifts[0] == shifts[1] == 0.0 and shifts[2] > 0
    sub = result["geometry"]["subspaces"]["1"]
    assert all(sub["read_overlap"][i][i] == pytest.approx(1.0) for i in range(3))
    assert sub["random_baseline"]["mean"] == pytest.approx(4 / 32, rel=0.5)
    shift = result["geometry"]["shifts"]["1"]
    assert all(n > 0 for n in shift["shift_norm"])
    inter = result["interventions"]
    assert set(inter) == {"none", "helpful", "harmless", "honest"}
    for o in ("helpful", "harmless", "honest"):
        for group, alpha in inter[o]["alpha"].items():
            assert alpha[o] == 0.0, "muting an objective sets its negotiation weight to zero"
        assert inter["none"]["alpha"]["harmful"][o] > 0
    assert inter["helpful"]["metrics"]["ref_nll"]["value"] != inter["none"]["metrics"]["ref_nll"]["value"]
    assert len(inter["none"]["examples"]["harmful"]) == 2
    assert result["blind_spots"]["honest"]["expected"] == "honest"


def test_interpret_figures_and_json(result, tmp_path):
    figures = write_figures(result, tmp_path)
    assert set(figures) == {"trajectories", "heatmap", "interventions", "geometry", "blind_spots"}
    for path in figures.values():
        data = open(path, "rb").read()
        assert data[:4] == b"\x89PNG" and len(data) > 5_000
    write_json(tmp_path / "interpret.json", result, default=jsonable, allow_nan=False)
    assert json.loads((tmp_path / "interpret.json").read_text())["heatmap"]["harmful"]["n"] == 6


def test_interpret_config_errors():
    with pytest.raises(ValueError, match="analyses"):
        InterpretConfig(analyses=["tsne"])
    with pytest.raises(ValueError, match="forgetting_recipe"):
        InterpretConfig(analyses=["forgetting"])


def test_forgetting_joint_vs_sequential(smol_tokenizer, data_dir, tmp_path):
    from negotiax.circuit import CircuitConfig as CC
    from negotiax.experiments.forgetting import forgetting
    from negotiax.experiments.probe import load_probes
    from negotiax.recipe import Recipe
    from negotiax.train.config import TrainConfig

    model = tiny_vocab_model(smol_tokenizer)
    # One small harmless file and no overlap scan keep the four data loads fast.
    data = DataConfig(data_dir=str(data_dir), train_limit=8, max_length=48, batch_size=2, drop_test_overlap=False,
                      train={"harmless": {"path": "safety_tuned_llamas/safety_only_data_Instructions.json",
                                          "format": "alpaca"}})
    recipe = Recipe(circuit=CC(variant="negotiax", rank=4, head_dim=8), data=data,
                    train=TrainConfig(steps=2, lr=0.05, warmup_steps=0, progress=False))
    pc = ProbeConfig(n_harmful=2, n_benign=2, n_honest=2, n_helpful=2, max_new_tokens=2, n_boot=20)
    out = clean(forgetting(model, smol_tokenizer, recipe, load_probes(data, pc), pc, 2, tmp_path))
    assert [s["after"] for s in out["sequential"]] == ["helpful", "harmless", "honest"]
    assert (tmp_path / "joint" / "circuit").is_dir() and (tmp_path / "sequential_2_honest" / "circuit").is_dir()
    nll = [s["metrics"]["helpful"]["value"] for s in out["sequential"]]
    assert len(set(nll)) == 3, "every stage trains the same circuit further"
    assert out["forgetting"]["helpful"] == pytest.approx(nll[-1] - nll[0])  # NLL: lower is better
    assert out["joint"]["honest"]["n"] == 2
