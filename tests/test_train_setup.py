"""Training options: config validation, schedule, gradient checkpointing and LoRA on tiny models."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from negotiax import CircuitConfig, attach
from negotiax.train.backbone_setup import prepare_backbone
from negotiax.train.checkpoint import valid_checkpoints
from negotiax.train.config import TrainConfig
from negotiax.train.module import CircuitTrainModule
from negotiax.train.schedule import lr_factor
from negotiax.train.trainer import Trainer
from test_train_trainer import HandBuiltSteps


@pytest.mark.parametrize("key,value,message", [
    ("schedule", "step", "train.schedule"), ("steps", 0, "train.steps"), ("lr", "fast", "train.lr"),
    ("report_to", ["mlflow"], "train.report_to"), ("drift_tokens", "prompt", "train.drift_tokens"),
])
def test_config_errors_name_the_option(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value})


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(111)]
    assert factors[0] < factors[5] < factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[110] == pytest.approx(0.1)
    linear = TrainConfig(steps=110, warmup_steps=10, schedule="linear")
    assert lr_factor(60, linear) == pytest.approx(0.5)


def circuit_grads(gradient_checkpointing: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = prepare_backbone(tiny_model("llama"), TrainConfig(gradient_checkpointing=gradient_checkpointing))
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    with torch.no_grad():
        for site in attachment.circuit.sites.values():
            site.pathways.up.normal_()
            site.negotiation.out.normal_()
    module = CircuitTrainModule(model, attachment, TrainConfig())
    batch = HandBuiltSteps().make(0, 1)
    module(batch["input_ids"], batch["attention_mask"], batch["labels"], 1)["loss"].backward()
    return {n: p.grad.clone() for n, p in attachment.circuit.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_circuit_gradients():
    plain, checkpointed = circuit_grads(False), circuit_grads(True)
    assert plain.keys() == checkpointed.keys() and any("qkv" in k for k in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_lora_trains_adapters_and_resumes_them(tmp_path):
    def run(steps, callbacks=None):
        torch.manual_seed(0)
        model = prepare_backbone(tiny_model("llama"), TrainConfig(lora=True, lora_r=2))
        attachment = attach(model, CircuitConfig(rank=4, head_dim=4))  # hooks find the layers under peft
        cfg = TrainConfig(steps=steps, lr=1e-2, warmup_steps=0, save_every=2, progress=False, lora=True, lora_r=2)
        trainer = Trainer(model, attachment, cfg, HandBuiltSteps(), tmp_path, seed=0, callbacks=callbacks)
        trainer.train()
        return model

    class Killed(Exception):
        pass

    def kill(trainer, step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        run(4, [kill])
    assert (valid_checkpoints(tmp_path / "checkpoints")[-1] / "backbone_trainable.safetensors").is_file()
    resumed = run(4)
    lora = {n: p for n, p in resumed.named_parameters() if "lora_B" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(p.abs().sum() > 0 for p in lora.values())  # lora_B starts at zero: it trained
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert (tmp_path / "circuit" / "circuit.safetensors").is_file()


def test_gradient_checkpointing_recomputes_the_circuit_in_backward():
    torch.manual_seed(0)
    model = prepare_backbone(tiny_model("llama"), TrainConfig(gradient_checkpointing=True))
    attachment = attach(model, CircuitConfig(rank=4, head_dim=4))
    calls = []
    site = next(iter(attachment.circuit.sites.values()))
    site.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    module = CircuitTrainModule(model, attachment, TrainConfig())
    batch = HandBuiltSteps().make(0, 0)
    loss = module(batch["input_ids"], batch["attention_mask"], batch["labels"], 0)["loss"]
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # the checkpointed layer (and its hook) ran again during backward


def test_forcing_shares_name_every_objective_and_default_unnamed_ones_to_zero():
    from negotiax.train.config import TrainConfig

    assert TrainConfig(route_forcing=0.5).forcing_shares(["helpful", "harmless"]) == [0.5, 0.5]
    mapping = TrainConfig(route_forcing={"harmless": 1, "honest": "0.25"})
    assert mapping.forcing_shares(["helpful", "harmless", "honest"]) == [0.0, 1.0, 0.25]
