"""Preference sweep on a tiny model with real probe rows: points, α under β and mute, base equivalence, plot."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from negotiax import CircuitConfig, attach
from negotiax.cli import main as cli_main
from negotiax.data import DataConfig
from negotiax.experiments.common import clean, jsonable
from negotiax.io import write_json
from negotiax.experiments.probe import ProbeConfig, load_probes
from negotiax.experiments.sweep import SweepConfig, plot_sweep, preference_sweep, sweep_points
from negotiax.evaluation.metrics import reference_nll


def tiny_vocab_model(tokenizer, family="llama", seed=0):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family)
    cfg.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval().requires_grad_(False)


def perturb(attachment, seed=0, scale=0.5):
    """Give an untrained circuit non-zero outputs so preferences and mutes have an effect."""
    g = torch.Generator().manual_seed(seed)
    for p in attachment.circuit.parameters():
        p.data += torch.randn(p.shape, generator=g) * scale


@pytest.fixture(scope="module")
def probes(data_dir):
    cfg = ProbeConfig(n_harmful=2, n_benign=2, n_honest=2, n_helpful=2, max_new_tokens=2, batch_size=4, n_boot=50)
    return cfg, load_probes(DataConfig(data_dir=str(data_dir)), cfg)


def test_sweep_points_share_beta_zero():
    pts = sweep_points(["a", "b"], [-2.0, 0.0, 2.0], mute=True)
    assert [p["label"] for p in pts] == ["beta=0", "a=-2", "a=2", "a=mute", "b=-2", "b=2", "b=mute"]
    with pytest.raises(ValueError, match="finite"):
        SweepConfig(betas=[float("inf")])


def test_preference_sweep_alpha_follows_beta(smol_tokenizer, probes, tmp_path):
    probe_cfg, sets = probes
    assert {k: len(v) for k, v in sets.items()} == {"harmful": 2, "benign": 2, "honest": 2, "helpful": 2}
    model = tiny_vocab_model(smol_tokenizer)
    expected_base_nll = reference_nll(model, smol_tokenizer, sets["helpful"])
    cfg = SweepConfig(betas=[0, 4], probe=probe_cfg)
    objectives = ["harmless", "honest"]  # two objectives keep the test fast
    with attach(model, CircuitConfig(objectives=objectives, variant="negotiax", rank=4, head_dim=8)) as a:
        perturb(a)
        a.circuit.set_preference({"honest": 1.0})
        result = preference_sweep(model, smol_tokenizer, a, sets, cfg)
        assert a.circuit.preference()["honest"] == 1.0, "the preference is restored after the sweep"
    points = {p["label"]: p for p in result["points"]}
    assert len(points) == 1 + 2 * 1 + 2
    for o in result["objectives"]:
        muted = points[f"{o}=mute"]["alpha"]
        assert all(muted[s][o] == 0.0 for s in sets), "a muted objective has zero negotiation weight"
        for s in sets:
            assert points["beta=0"]["alpha"][s][o] < points[f"{o}=4"]["alpha"][s][o], (o, s)
    for p in points.values():
        m = p["metrics"]
        assert m["refusal_harmful"]["n"] == 2 and m["mc2"]["n"] == 2 and m["ref_nll"]["n"] == 2
        assert 0 <= m["mc2"]["value"] <= 1
        lo, hi = m["ref_nll"]["ci"]
        assert lo <= m["ref_nll"]["value"] <= hi
    # Muting every objective is the base model exactly.
    base_nll = result["base"]["metrics"]["ref_nll"]["value"]
    assert base_nll == pytest.approx(sum(expected_base_nll.values()) / 2, rel=1e-5)
    assert points["beta=0"]["metrics"]["ref_nll"]["value"] != pytest.approx(base_nll, rel=1e-6)
    assert set(result["pareto"]) <= set(points) and result["pareto"]
    png = plot_sweep(result, tmp_path / "sweep.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    write_json(tmp_path / "sweep.json", clean(result), default=jsonable, allow_nan=False)
    assert json.loads((tmp_path / "sweep.json").read_text())["points"][0]["label"] == "beta=0"


def test_sweep_refuses_pathways_circuit_and_missing_dir(smol_tokenizer, probes):
    probe_cfg, sets = probes
    model = tiny_vocab_model(smol_tokenizer)
    with attach(model, CircuitConfig(variant="pathways", rank=4)) as a:
        with pytest.raises(ValueError, match="mac / negotiax"):
            preference_sweep(model, smol_tokenizer, a, sets, SweepConfig(probe=probe_cfg))
    assert cli_main(["sweep"]) == 2


def test_alpha_rises_with_beta_on_every_probe_set(smol_tokenizer, probes):
    from negotiax.experiments.probe import negotiation_by_set

    _, sets = probes
    model = tiny_vocab_model(smol_tokenizer)
    with attach(model, CircuitConfig(variant="negotiax", rank=4, head_dim=8)) as a:
        perturb(a, seed=2, scale=0.1)  # moderate logits: one decision token must not saturate
        for o in a.circuit.objectives:
            series = []
            for b in (-4.0, 0.0, 4.0):
                a.circuit.set_preference({o: b})
                short = {k: sets[k] for k in ("harmful", "honest")}  # the shortest prompts: a fast test
                series.append([alpha[o] for alpha in negotiation_by_set(model, smol_tokenizer, a, short, "auto", 4).values()])
            for low, high in zip(series, series[1:]):
                assert all(x < y for x, y in zip(low, high)), (o, series)
