"""Catastrophic forgetting: each objective's metric when trained jointly vs one objective after another.

Both schedules start from the same initial circuit and see the same number of batches: joint training runs
`steps` optimiser steps with one batch of every objective each; sequential training runs `steps` steps on
objective 1 only, then `steps` on objective 2 only, and so on, on the same circuit. After each sequential
stage every objective's metric is measured, so forgetting = (metric right after its own stage) - (metric
at the end), signed so that a positive number means the objective got worse.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from accelerate.utils import set_seed
from torch import nn

from ..attach import attach
from ..data import Example
from ..pipeline import build_data
from ..recipe import Recipe
from ..train.backbone_setup import prepare_backbone
from ..train.trainer import Trainer
from .probe import HIGHER_IS_BETTER, ProbeConfig, measure

log = logging.getLogger(__name__)

# The offline metric that stands for each objective.
OBJECTIVE_METRIC = {"helpful": "ref_nll", "harmless": "refusal_harmful", "honest": "mc2"}


def _train(model: nn.Module, tokenizer, attachment, recipe: Recipe, objectives: list[str], steps: int,
           run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh stage, never a resume of an older one
    train_cfg = replace(recipe.train, steps=steps, save_every=0, eval_holdout=0, progress=False)
    source, _ = build_data(replace(recipe, train=train_cfg), tokenizer, objectives)
    Trainer(model, attachment, train_cfg, source, run_dir, seed=recipe.seed).train()


def _scores(model, tokenizer, probes, probe_cfg, attachment, objectives) -> dict:
    metrics = measure(model, tokenizer, probes, probe_cfg, attachment)["metrics"]
    return {o: metrics[OBJECTIVE_METRIC[o]] for o in objectives if o in OBJECTIVE_METRIC} | {
        "over_refusal_benign": metrics["over_refusal_benign"]}


def forgetting(model: nn.Module, tokenizer, recipe: Recipe, probes: dict[str, list[Example]],
               probe_cfg: ProbeConfig, steps: int, out_dir: str | Path) -> dict:
    """Train jointly and sequentially from the same start; metrics of every objective after each."""
    if not recipe.circuit.has_circuit:
        raise ValueError("forgetting needs a trainable circuit; circuit.variant is 'base'")
    out_dir = Path(out_dir)
    objectives = list(recipe.circuit.objectives)
    model = prepare_backbone(model, recipe.train)
    set_seed(recipe.seed)
    with attach(model, recipe.circuit) as a:
        _train(model, tokenizer, a, recipe, objectives, steps, out_dir / "joint")
        joint = _scores(model, tokenizer, probes, probe_cfg, a, objectives)
    set_seed(recipe.seed)  # the same initial circuit as the joint run
    stages = []
    with attach(model, recipe.circuit) as a:
        for i, objective in enumerate(objectives):
            _train(model, tokenizer, a, recipe, [objective], steps, out_dir / f"sequential_{i}_{objective}")
            stages.append({"after": objective, "metrics": _scores(model, tokenizer, probes, probe_cfg, a, objectives)})
            log.info("sequential stage %d (%s) done", i + 1, objective)
    return {"objectives": objectives, "steps_per_stage": steps, "metric": OBJECTIVE_METRIC,
            "joint": joint, "sequential": stages, "forgetting": _forgetting(objectives, stages)}


def _forgetting(objectives: list[str], stages: list[dict]) -> dict:
    out = {}
    final = stages[-1]["metrics"]
    for i, o in enumerate(objectives):
        metric = OBJECTIVE_METRIC.get(o)
        if metric is None:
            continue
        own, end = stages[i]["metrics"][o]["value"], final[o]["value"]
        sign = 1 if HIGHER_IS_BETTER[metric] else -1
        out[o] = None if own is None or end is None else sign * (own - end)
    return out
