"""Routing warm start: fit the negotiation to the training prompts' decision positions before the first step.

The decision position is the last prompt token: it predicts the answer's first token, so the say each objective
has there decides how an answer starts (a refusal or not). Before training, every pathway's update is zero
(U = 0), so alpha at a site depends only on the hidden state h there, and h comes from the frozen layers below
the site: it is computed once per prompt, from the tokens training sees (the tokenised training rows, cut to
data.max_length the same way). `fit_routing` then fits the negotiation's query/key projections and axis
embeddings, full batch, so that alpha at the decision position gives each prompt's objective the most say
(cross-entropy on alpha, each objective weighted equally). Seconds of compute for what 50 training steps see a
few hundred examples of. The pathways are not touched, so the circuit is still the identity afterwards; the
training loop's routing loss goes on from there.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..attach import Attachment, capture, site_modules
from .losses import IGNORE

log = logging.getLogger(__name__)


def spread(prompts: list[str], n: int) -> list[int]:
    """Indices of n distinct prompts taken evenly across the list (every source of a mixed list is represented);
    a repeated prompt counts at its first row."""
    first: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        first.setdefault(prompt, i)
    rows = list(first.values())
    if len(rows) <= n:
        return rows
    return [rows[math.floor(i * len(rows) / n)] for i in range(n)]


def prompt_ids(feature: dict) -> list[int]:
    """A tokenised training row's tokens up to its decision position (the last label before the response)."""
    labels = feature["labels"]
    start = next((i for i, label in enumerate(labels) if label != IGNORE), None)
    if not start:
        raise ValueError("a training row has no prompt token before its response; cannot find its decision position")
    return list(feature["input_ids"][:start])


@torch.inference_mode()
def decision_states(model, attachment: Attachment, ids: list[list[int]], collate: Callable[[list], dict],
                    batch_size: int = 16) -> dict[str, torch.Tensor]:
    """{site key: (n, d) hidden state entering the circuit at the last token of each id list}, in eval mode.
    `collate` pads a list of {"input_ids", "labels"} on the right (the training Collator)."""
    modules = site_modules(model, attachment.circuit)
    deepest = max(modules, key=int)
    device = next(model.parameters()).device
    out = {key: [None] * len(ids) for key in modules}
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: little padding per batch
    was_training = model.training
    model.eval()  # no dropout in the states the routing is fitted to
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collate([{"input_ids": ids[i], "labels": [IGNORE] * len(ids[i])} for i in chunk])
            # prepend: the layer's own output h, before the circuit rewrites it
            with capture(modules, prepend=True, stop_at=deepest) as record:
                model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      use_cache=False)
            for key, hidden in record.items():
                for row, i in enumerate(chunk):  # right padding: each row's last real token
                    out[key][i] = hidden[row, len(ids[i]) - 1].float().cpu()
    finally:
        model.train(was_training)
    return {key: torch.stack(rows) for key, rows in out.items()}


def routing_accuracy(site, states: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of states whose alpha gives the target objective the most say."""
    with torch.no_grad():
        alpha = site(states[:, None].to(site.bias.device)).alpha[:, 0]
    return float((alpha.argmax(-1).cpu() == targets).float().mean())


def fit_routing(attachment: Attachment, states: dict[str, torch.Tensor], targets: torch.Tensor, steps: int,
                lr: float) -> dict[str, dict[str, float]]:
    """Fit each site's negotiation (W_q, W_k, axis embeddings) so that alpha at the given decision states
    picks `targets` (objective indices, one per state); returns each site's accuracy before and after."""
    n = attachment.circuit.cfg.n_objectives
    counts = torch.bincount(targets, minlength=n).clamp(min=1).float()
    weights = (1.0 / counts)[targets] / n  # every objective counts the same, however many prompts it has
    report = {}
    for key, x in states.items():
        site = attachment.circuit.sites[key]
        negotiation = site.negotiation
        if negotiation is None:
            raise ValueError("train.route_fit_prompts needs a circuit with a negotiation (Module II)")
        device = site.bias.device
        x, y, w = x.to(device)[:, None], targets.to(device), weights.to(device)
        params = [negotiation.qkv] + ([negotiation.axis] if negotiation.axis is not None else [])
        params = [p for p in params if p.requires_grad]
        before = routing_accuracy(site, x[:, 0], targets)
        optimizer = torch.optim.Adam(params, lr=lr)
        def loss_now() -> torch.Tensor:
            alpha = site(x).alpha[:, 0]  # (n, N)
            return (F.nll_loss(torch.log(alpha.clamp(min=1e-8)), y, reduction="none") * w).sum()

        for _ in range(steps):
            loss = loss_now()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for p in site.parameters():  # nothing else may carry this fit's gradients into training
            p.grad = None
        with torch.no_grad():
            final = float(loss_now())
        report[key] = {"accuracy_before": before, "accuracy_after": routing_accuracy(site, x[:, 0], targets),
                       "loss_after": final}
    return report


def warm_start_routing(model, attachment: Attachment, datasets: dict, collate: Callable[[list], dict],
                       n_prompts: int, steps: int, lr: float, batch_size: int = 16) -> dict:
    """Take n_prompts training rows per objective (distinct prompts, spread over each tokenised dataset: an
    objective -> TokenizedDataset map), compute their decision states and fit the routing to them (each to its
    routing target: its objective, or its source's `route`); returns a record of what was done (prompts per
    target objective, accuracy per site)."""
    objectives = attachment.circuit.objectives
    ids, targets = [], []
    for j, objective in enumerate(objectives):
        dataset = datasets.get(objective)
        if dataset is None:
            continue
        for i in spread([ex.prompt for ex in dataset.examples], n_prompts):
            ids.append(prompt_ids(dataset.features[i]))
            targets.append(dataset.features[i].get("route", j))  # a source's `route` sends its rows elsewhere
    if not ids:
        raise ValueError("train.route_fit_prompts: no training prompts to fit the routing to")
    states = decision_states(model, attachment, ids, collate, batch_size)
    report = fit_routing(attachment, states, torch.tensor(targets), steps, lr)
    for key, r in report.items():
        log.info("routing warm start at layer %s: decision-position routing accuracy on %d training prompts "
                 "%.1f%% -> %.1f%%", key, len(ids), 100 * r["accuracy_before"], 100 * r["accuracy_after"])
    return {"prompts": {o: targets.count(j) for j, o in enumerate(objectives)}, "steps": steps, "lr": lr,
            "sites": report}
