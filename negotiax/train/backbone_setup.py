"""Backbone options for training: LoRA (peft), 4-bit preparation (QLoRA), gradient checkpointing.

The circuit attaches with hooks found generically, so it works the same on a PEFT-wrapped model.
"""
from __future__ import annotations

import importlib.util
import logging

from torch import nn

from .config import TrainConfig

log = logging.getLogger(__name__)


def add_lora(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Wrap the backbone with trainable LoRA adapters (peft); 4-bit backbones are prepared first."""
    if importlib.util.find_spec("peft") is None:
        raise ValueError("train.lora needs the peft package: pip install 'negotiax[lora]'")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_targets or "all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %d trainable backbone parameters", cfg.lora_r, lora.target_modules, trainable)
    return model


def prepare_backbone(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Apply LoRA and gradient checkpointing as configured; returns the model to attach the circuit to."""
    if cfg.lora:
        model = add_lora(model, cfg)
    elif getattr(model, "is_loaded_in_4bit", False):
        log.info("4-bit backbone without LoRA: only the circuit trains (it stays in fp32)")
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing keeps the graph to the circuit's parameters even though the
        # backbone's inputs need no gradient; the reentrant kind would silently drop it.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # Checkpointing and LoRA dropout act in train mode only; the frozen backbone otherwise stays in eval
    # mode so its dropout (if any) does not perturb the circuit's training signal.
    model.train(cfg.gradient_checkpointing or cfg.lora)
    return model
