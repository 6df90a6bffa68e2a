"""The training loop on tiny models with hand-built batches: learning, variants, resume, NaN, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_model
from negotiax import CircuitConfig, attach
from negotiax.train.checkpoint import MANIFEST, valid_checkpoints
from negotiax.train.config import TrainConfig
from negotiax.train.tracker import read_metrics
from negotiax.train.trainer import NonFiniteLossError, Trainer

OBJECTIVES = ["helpful", "harmless", "honest"]


class HandBuiltSteps:
    """Per step one batch per objective; objective j's responses repeat token 10+j, so each is learnable.

    The batch of step t is a function of (t, objective) alone, so state_dict() is just the step counter.
    """

    def __init__(self, objectives=OBJECTIVES, batch=4, length=12, prompt=4):
        self.objectives, self.batch, self.length, self.prompt = objectives, batch, length, prompt
        self.t = 0

    def make(self, t: int, j: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * t + j)
        ids = torch.randint(20, 120, (self.batch, self.length), generator=g)
        ids[:, self.prompt:] = 10 + j
        ids[:, self.prompt::3] = torch.randint(20, 120, ids[:, self.prompt::3].shape, generator=g)
        labels = ids.clone()
        labels[:, :self.prompt] = -100
        mask = torch.ones_like(ids)
        mask[0, -2:] = 0  # some right padding
        labels[0, -2:] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def __iter__(self):
        return self

    def __next__(self):
        out = {o: self.make(self.t, j) for j, o in enumerate(self.objectives)}
        self.t += 1
        return out

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = state["t"]


def run(tmp_path, steps=8, variant="negotiax", objectives=OBJECTIVES, callbacks=None, eval_batches=None,
        **train):
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(objectives=list(objectives), variant=variant, rank=4, head_dim=4))
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup_steps=2, save_every=3, keep_last=2, log_every=1,
                      progress=False, **train)
    trainer = Trainer(model, attachment, cfg, HandBuiltSteps(objectives), tmp_path, seed=0,
                      callbacks=callbacks, eval_batches=eval_batches)
    return trainer, trainer.train()


def circuit_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.circuit.state_dict().items()}


def test_training_lowers_held_out_ce_per_objective(tmp_path):
    held_out = {o: [HandBuiltSteps().make(10_000, j)] for j, o in enumerate(OBJECTIVES)}
    _, summary = run(tmp_path, steps=30, eval_batches=held_out)
    for objective in OBJECTIVES:
        assert summary["eval_ce_after"][objective] < summary["eval_ce_before"][objective] - 0.1
    assert (tmp_path / "circuit" / "circuit.safetensors").is_file()
    records = read_metrics(tmp_path)
    logged = next(r for r in records if r.get("step") == 1 and "lr" in r)
    for objective in OBJECTIVES:
        for term in ("ce", "route", "drift", "orth", "loss"):
            assert f"{objective}/{term}" in logged


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    straight, _ = run(tmp_path / "straight", steps=8)

    class Killed(Exception):
        pass

    def kill_after_step_4(trainer, step):  # checkpoint at 3, killed at 4: resume replays step 4
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "resumed", steps=8, callbacks=[kill_after_step_4])
    assert [p.name for p in valid_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step-000003"]
    resumed, summary = run(tmp_path / "resumed", steps=8)
    assert summary["steps"] == 8
    a, b = circuit_state(straight), circuit_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert any(a[k].abs().sum() > 0 for k in a if k.endswith("up"))  # it did train
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed") if "lr" in r]
    assert steps == list(range(1, 9))  # replayed steps are logged once


def test_checkpoints_keep_last_n_and_only_complete_ones_count(tmp_path):
    run(tmp_path, steps=10)
    names = [p.name for p in valid_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step-000009", "step-000010"]
    half = tmp_path / "checkpoints" / "step-000011"
    half.mkdir()  # a folder without a manifest (a killed write) is never a checkpoint
    assert [p.name for p in valid_checkpoints(tmp_path / "checkpoints")] == names
    manifest = json.loads((tmp_path / "checkpoints" / "step-000010" / MANIFEST).read_text())
    assert manifest["step"] == 10 and manifest["sampler"] == {"t": 10}


def test_finished_run_is_skipped_when_rerun(tmp_path):
    trainer, _ = run(tmp_path, steps=4)
    weights = circuit_state(trainer)
    again, summary = run(tmp_path, steps=4)
    assert summary["steps"] == 4
    for key, value in circuit_state(again).items():
        torch.testing.assert_close(value, weights[key])


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    def poison(trainer, step):
        if step == 4:
            with torch.no_grad():
                next(iter(trainer.circuit.sites.values())).pathways.up.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 5.*step-000003"):
        run(tmp_path, steps=8, callbacks=[poison])
    assert [p.name for p in valid_checkpoints(tmp_path / "checkpoints")] == ["step-000003"]
    assert not (tmp_path / "circuit").exists()


@pytest.mark.parametrize("variant,generic,has_route", [
    ("negotiax", False, True), ("negotiax", True, False), ("mac", False, False), ("pathways", False, False),
    ("branched", False, False),
])
def test_variants_log_only_their_loss_terms(tmp_path, variant, generic, has_route):
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(variant=variant, generic=generic, rank=4, head_dim=4))
    cfg = TrainConfig(steps=2, warmup_steps=0, log_every=1, progress=False)
    Trainer(model, attachment, cfg, HandBuiltSteps(), tmp_path, seed=0).train()
    record = next(r for r in read_metrics(tmp_path) if "lr" in r)
    assert ("helpful/route" in record) == has_route
    assert "helpful/drift" in record and "helpful/orth" in record


def test_frozen_ablation_keeps_qkv_at_initialisation(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(frozen=True, rank=4, head_dim=4))
    site = next(iter(attachment.circuit.sites.values()))
    qkv = site.negotiation.qkv.detach().clone()
    cfg = TrainConfig(steps=3, warmup_steps=0, lr=1e-2, progress=False)
    Trainer(model, attachment, cfg, HandBuiltSteps(), tmp_path, seed=0).train()
    torch.testing.assert_close(site.negotiation.qkv, qkv, rtol=0, atol=0)
    assert site.negotiation.out.abs().sum() > 0


def test_pair_ablation_trains_two_objectives(tmp_path):
    trainer, summary = run(tmp_path, steps=3, objectives=["helpful", "honest"])
    assert trainer.circuit.objectives == ["helpful", "honest"]
    record = next(r for r in read_metrics(tmp_path) if "lr" in r)
    assert "honest/ce" in record and not any(k.startswith("harmless/") for k in record)


def test_base_variant_has_nothing_to_train(tmp_path):
    model = tiny_model("llama")
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    attachment.circuit.cfg.variant = "base"
    with pytest.raises(ValueError, match="nothing to train"):
        Trainer(model, attachment, TrainConfig(), HandBuiltSteps(), tmp_path)


def test_gradient_accumulation_and_checkpointing_run(tmp_path):
    trainer, summary = run(tmp_path, steps=3, grad_accum=2, gradient_checkpointing=False)
    assert summary["steps"] == 3
    assert trainer.source.t == 6  # two micro-steps per optimiser step


def test_report_to_tensorboard_logs_or_warns_when_missing(tmp_path, caplog):
    import importlib.util

    run(tmp_path, steps=1, report_to=["tensorboard"])
    assert read_metrics(tmp_path)  # the JSONL is always written
    if importlib.util.find_spec("tensorboard") is None:
        assert "tensorboard" in caplog.text and "not installed" in caplog.text
    else:
        assert any((tmp_path / "tensorboard").iterdir())
