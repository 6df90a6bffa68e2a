"""The training loss of DESIGN.md section 3, one plain function per term.

For a batch of objective o:
    L = CE(response tokens) + l_route * CE(alpha_bar, o) + l_ref * drift + l_orth * overlap [+ l_off * off-target]
Every function takes tensors and returns a scalar tensor; `loss_terms` assembles the named, weighted terms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..circuit import Circuit, SiteOutput

IGNORE = -100


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a token belongs to a response (the Collator sets prompt and padding labels to -100)."""
    return labels != IGNORE


def prediction_mask(labels: torch.Tensor) -> torch.Tensor:
    """True at the positions that predict a response token: the decision position (the last prompt token,
    which predicts the first answer token) and every answer token but the last. These are where the circuit
    shapes the answer, so the routing loss reads alpha there; the shared chat-template tokens never count."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def decision_mask(labels: torch.Tensor) -> torch.Tensor:
    """True at each sequence's decision position: the last prompt token, the one that predicts the first
    response token."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = (labels[:, :-1] == IGNORE) & (labels[:, 1:] != IGNORE)
    return mask


def ce_labels(labels: torch.Tensor, ce_rows: torch.Tensor | None) -> torch.Tensor:
    """The labels whose answers are learnt: rows with ce_rows 0 (route-only examples) become all -100."""
    if ce_rows is None:
        return labels
    return labels.masked_fill(~ce_rows.bool()[:, None].to(labels.device), IGNORE)


def response_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged over the batch's response tokens.

    logits: (B, S, V) at every position, or (n, V) at the positions that predict a response token only
    (`prediction_mask(labels)`, row by row, as `backbone.logits_at` returns them).
    """
    shift_labels = labels[:, 1:]
    if not (shift_labels != IGNORE).any():
        raise ValueError("a batch has no response tokens: every label is -100 (prompts too long for max_length?)")
    if logits.dim() == 2:
        targets = shift_labels[shift_labels != IGNORE]
        if logits.size(0) != targets.numel():
            raise ValueError(f"{logits.size(0)} rows of logits for {targets.numel()} response tokens: pass the "
                             f"logits at prediction_mask(labels), or at every position")
        return F.cross_entropy(logits.float(), targets)
    shift_logits = logits[:, :-1].float()
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE)


def row_targets(objective: int, route_rows: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """Each row's routing target: the batch's objective, or the row's own where route_rows is >= 0 (a source's
    `route`)."""
    targets = torch.full((batch,), objective, dtype=torch.long, device=device)
    if route_rows is None:
        return targets
    route_rows = route_rows.to(device)
    return torch.where(route_rows >= 0, route_rows, targets)


def routing_ce(alpha: torch.Tensor, mask: torch.Tensor, objective: int, eps: float = 1e-8,
               per_token: bool = False, decision: torch.Tensor | None = None,
               decision_share: float = 0.0, route_rows: torch.Tensor | None = None) -> torch.Tensor:
    """CE between the negotiation weights averaged over the masked tokens (alpha_bar) and the batch's objective.

    alpha: (B, S, N) from Attachment.alpha(); mask: (B, S), the positions that predict response tokens
    (`prediction_mask`). alpha_bar sums to one, so the
    loss is -log alpha_bar[objective]: the circuit learns to give this batch's objective the most say.
    With per_token, the CE is taken at every masked position and averaged: each position must give the
    objective the most say, not only their average. decision_share (per_token only): this share of the loss
    is taken at the `decision` positions (a mask like `mask`), the rest over all masked positions, so the
    one position per answer that decides how it starts is not outweighed by its many answer tokens.
    route_rows (B,): a row's own target objective where >= 0 (else the batch's); without per_token, alpha_bar
    is then taken per target and the CEs are weighted by their share of the masked tokens.
    """
    weights = mask.to(alpha.dtype)
    targets = row_targets(objective, route_rows, alpha.size(0), alpha.device)
    if per_token:
        picked = alpha.gather(-1, targets[:, None, None].expand(-1, alpha.size(1), 1)).squeeze(-1)
        token_ce = -torch.log(picked.clamp(min=eps))
        loss = (token_ce * weights).sum() / weights.sum().clamp(min=1)
        if decision_share > 0 and decision is not None and decision.any():
            at_decision = (token_ce * decision).sum() / decision.sum()
            loss = (1 - decision_share) * loss + decision_share * at_decision
        return loss
    # Per target objective t: alpha_bar_t over the masked tokens of the rows that target t, and its share of them.
    # Summed with one-hot products rather than a loop over targets, so nothing waits on the device.
    one_hot = F.one_hot(targets, alpha.size(-1)).to(alpha.dtype)  # (B, N)
    tokens = one_hot.t() @ weights.sum(1)  # (N,) masked tokens per target
    said = (one_hot * (alpha * weights.unsqueeze(-1)).sum(1)).sum(0)  # (N,) alpha_t summed over those tokens
    alpha_bar = said / tokens.clamp(min=1)
    share = tokens / weights.sum().clamp(min=1)
    return (share * -torch.log(alpha_bar.clamp(min=eps))).sum()


def pathway_drift(record: dict[int, SiteOutput], mask: torch.Tensor) -> torch.Tensor:
    """mean_i ||z_i - h||^2 over the masked tokens, averaged over the circuit's sites (policy-reference)."""
    weights = mask.float()
    per_site = [(out.drift.float() * weights).sum() / weights.sum().clamp(min=1) for out in record.values()]
    return torch.stack(per_site).mean()


def off_target(record: dict[int, SiteOutput], mask: torch.Tensor, targets: int | torch.Tensor) -> torch.Tensor:
    """mean_{j != o} ||z_j - h||^2 over the masked tokens, averaged over the sites, where o is each row's own
    objective (`targets`: the batch's objective, or one per row as `row_targets` gives them, so a source's
    `route` counts): how far the other objectives' pathways move a row's states. Penalised, it keeps each pathway
    quiet on the prompts that are not its own (e.g. the harmless pathway on benign requests), so that a partial
    say (alpha_j of 0.3) does not apply a large part of its update where it does not belong. Zero with a single
    objective (there is no other pathway)."""
    weights = mask.float()
    n = next(iter(record.values())).sq_norms.size(-1)  # every site has the circuit's objectives
    if n < 2:
        return weights.new_zeros(())
    own = torch.as_tensor(targets, device=weights.device).expand(weights.size(0))
    others = (1.0 - F.one_hot(own, n).float()).unsqueeze(1) / (n - 1)  # (B, 1, N): the mean over the other pathways
    per_site = [((out.sq_norms.float() * others).sum(-1) * weights).sum() / weights.sum().clamp(min=1)
                for out in record.values()]
    return torch.stack(per_site).mean()


def subspace_overlap(directions: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} ||D^_i D^_j^T||_F^2 with D^ the row-normalised read-out directions (N, r, d)."""
    unit = F.normalize(directions.float(), dim=-1)
    n = unit.size(0)
    total = unit.new_zeros(())
    for i in range(n):
        for j in range(i + 1, n):
            total = total + (unit[i] @ unit[j].t()).pow(2).sum()
    return total


def circuit_overlap(circuit: Circuit) -> torch.Tensor:
    """subspace_overlap averaged over the circuit's sites, so its scale does not grow with the layer count."""
    return torch.stack([subspace_overlap(site.pathways.directions()) for site in circuit.sites.values()]).mean()


def loss_terms(logits: torch.Tensor, labels: torch.Tensor, record: dict[int, SiteOutput],
               alpha: torch.Tensor | None, circuit: Circuit, objective: int, *, lambda_route: float,
               lambda_ref: float, lambda_orth: float, drift_tokens: str = "response",
               attention_mask: torch.Tensor | None = None, route_per_token: bool = False,
               ce_rows: torch.Tensor | None = None, route_decision_share: float = 0.0,
               route_rows: torch.Tensor | None = None, lambda_off: float = 0.0) -> dict[str, torch.Tensor]:
    """Every named term, already weighted, plus their sum under "loss".

    logits: every position's (B, S, V), or only those at prediction_mask(ce_labels(labels, ce_rows)), flattened
    to (n, V) (what the training module computes: the LM head runs at the learnt answers' positions alone).
    `alpha` None (no Module II, or a variant without routing loss) or lambda_route 0 drops the routing term.
    The drift averages over response tokens, or over every real (non-padding) token with drift_tokens="all".
    lambda_off > 0 adds the off-target term at the positions that predict an answer token (`prediction_mask`),
    each row's own objective being its routing target (a source's `route` counts).
    """
    mask = response_mask(labels)
    predicting = prediction_mask(labels)  # the positions that predict an answer token
    learnt = ce_labels(labels, ce_rows)  # route-only rows teach the routing term alone
    terms = {"ce": response_ce(logits, learnt) if (learnt[:, 1:] != IGNORE).any() else logits.new_zeros(())}
    if alpha is not None and lambda_route > 0:
        terms["route"] = lambda_route * routing_ce(alpha, predicting, objective,
                                                   per_token=route_per_token, decision=decision_mask(labels),
                                                   decision_share=route_decision_share, route_rows=route_rows)
    if lambda_ref > 0:
        drift_mask = mask if drift_tokens == "response" or attention_mask is None else attention_mask.bool()
        terms["drift"] = lambda_ref * pathway_drift(record, drift_mask)
    if lambda_off > 0:
        targets = row_targets(objective, route_rows, labels.size(0), labels.device)
        terms["off"] = lambda_off * off_target(record, predicting, targets)
    if lambda_orth > 0:
        terms["orth"] = lambda_orth * circuit_overlap(circuit)
    terms["loss"] = torch.stack(list(terms.values())).sum()
    return terms
