"""Offline probe sets and the metrics measured on them at one circuit setting (preference, mute).

Used by the preference sweep, the causal interventions and the ablation plots: harmful prompts (refusal ↑),
benign prompts (over-refusal ↓), TruthfulQA test questions (MC1 / MC2 ↑) and AlpacaEval references (NLL ↓),
each with n and a bootstrap 95% interval.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..attach import Attachment
from ..data import DataConfig, Example, benign_prompts, load_test_sets
from ..evaluation.metrics import bootstrap_ci, mc_scores, reference_nll, refusal_rate
from ..evaluation.negotiation import profiles_by_group
from ..generation.config import GenerationConfig
from ..generation.generate import generate

log = logging.getLogger(__name__)

HARMFUL, BENIGN, HONEST, HELPFUL = "harmful", "benign", "honest", "helpful"


@dataclass
class ProbeConfig:
    """How many prompts of each kind, and how answers are generated (greedy)."""

    n_harmful: int = 50
    n_benign: int = 50
    n_honest: int = 50
    n_helpful: int = 50
    max_new_tokens: int = 48  # the refusal detector reads the first 300 characters
    batch_size: int = 16
    template: str = "auto"
    n_boot: int = 1000
    n_examples: int = 3  # example generations kept per prompt set

    def __post_init__(self) -> None:
        for name in ("n_harmful", "n_benign", "n_honest", "n_helpful", "max_new_tokens", "batch_size", "n_boot"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe.{name}={getattr(self, name)}: must be at least 1")


def load_probes(data: DataConfig, cfg: ProbeConfig) -> dict[str, list[Example]]:
    """{harmful, benign, honest, helpful}: the first n test prompts of each kind (benign never trained on)."""
    tests = load_test_sets(data, limit=False)
    for objective in ("harmless", "honest", "helpful"):
        if objective not in tests:
            raise ValueError(f"data.test.{objective}: the probes need a {objective} test set")
    honest = [ex for ex in tests["honest"] if ex.incorrect_answers]
    helpful = [ex for ex in tests["helpful"] if ex.reference]
    return {HARMFUL: tests["harmless"][:cfg.n_harmful], BENIGN: benign_prompts(data, cfg.n_benign),
            HONEST: honest[:cfg.n_honest], HELPFUL: helpful[:cfg.n_helpful]}


def _entry(values: list[float], n_boot: int) -> dict:
    low, high = bootstrap_ci(values, n_boot=n_boot)
    return {"value": sum(values) / len(values) if values else None, "ci": [low, high], "n": len(values)}


def negotiation_by_set(model: nn.Module, tokenizer, attachment: Attachment | None, probes: dict[str, list[Example]],
                       template: str, batch_size: int) -> dict[str, dict[str, float]] | None:
    """Mean α at the decision position per probe set, or None when the circuit has no negotiation."""
    if attachment is None or not attachment.circuit.cfg.has_negotiation:
        return None
    groups = {name: [ex.prompt for ex in examples] for name, examples in probes.items()}
    profiles = profiles_by_group(model, tokenizer, attachment, groups, template=template, batch_size=batch_size)
    return {name: {o: float(v) for o, v in zip(attachment.circuit.objectives, p.decision.mean(0))}
            for name, p in profiles.items()}


@torch.inference_mode()
def measure(model: nn.Module, tokenizer, probes: dict[str, list[Example]], cfg: ProbeConfig,
            attachment: Attachment | None = None) -> dict:
    """Offline metrics of the model as it is now (whatever circuit and preference are attached)."""
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, template=cfg.template)
    out: dict = {"metrics": {}, "examples": {}}
    for name, key in ((HARMFUL, "refusal_harmful"), (BENIGN, "over_refusal_benign")):
        rows = generate(model, tokenizer, probes[name], gen)
        out["metrics"][key] = _entry(refusal_rate([r["output"] for r in rows]), cfg.n_boot)
        out["examples"][name] = [{"prompt": r["prompt"], "output": r["output"]} for r in rows[:cfg.n_examples]]
    mc1, mc2 = mc_scores(model, tokenizer, probes[HONEST], cfg.template, cfg.batch_size)
    out["metrics"]["mc1"] = _entry(mc1, cfg.n_boot)
    out["metrics"]["mc2"] = _entry(mc2, cfg.n_boot)
    nll = reference_nll(model, tokenizer, probes[HELPFUL], cfg.template, cfg.batch_size)
    out["metrics"]["ref_nll"] = _entry(list(nll.values()), cfg.n_boot)
    out["alpha"] = negotiation_by_set(model, tokenizer, attachment, probes, cfg.template, cfg.batch_size)
    return out


# Which way is better for each metric (for Pareto fronts and plots).
HIGHER_IS_BETTER = {"refusal_harmful": True, "over_refusal_benign": False, "mc1": True, "mc2": True,
                    "ref_nll": False}
