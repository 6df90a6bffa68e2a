"""The backbone plus its attached circuit as one `nn.Module` whose forward returns the loss terms.

Accelerate wraps this module (DDP, FSDP, DeepSpeed), so the losses are computed inside `forward`,
where the circuit's hooks record alpha and the pathway drift.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..attach import Attachment, preference
from .config import TrainConfig
from ..backbone import logits_at
from .losses import ce_labels, loss_terms, prediction_mask, response_ce


class CircuitTrainModule(nn.Module):
    """forward(input_ids, attention_mask, labels, objective[, ce_rows, route_rows]) -> {ce, route, drift, off,
    orth, loss} (the terms that are on). A share of the batch's rows (train.route_forcing, per objective) runs
    objective o's pathway alone under teacher-forced routing, the rest through the negotiation's own alpha;
    route_rows sends a row's routing and off-target terms to its own objective (see losses.row_targets)."""

    def __init__(self, backbone: nn.Module, attachment: Attachment | None, cfg: TrainConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.circuit = attachment.circuit if attachment is not None else None
        self.attachment = attachment
        self.cfg = cfg
        self.routing = self.circuit is not None and self.circuit.cfg.supervises_routing
        # Names the circuit lacks are left out: an ablation's pair of objectives keeps the recipe's mapping.
        self.forcing = cfg.forcing_shares(self.circuit.objectives) if self.circuit is not None else []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                objective: int, ce_rows: torch.Tensor | None = None,
                route_rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        learnt = ce_labels(labels, ce_rows)  # route-only rows teach the routing term alone
        with self._only_pathway(objective), self._forced_routing(objective, input_ids.shape[0]):
            # the logits of the positions that predict a learnt answer token, (n, V): no LM head elsewhere
            logits = logits_at(self.backbone, input_ids, attention_mask, prediction_mask(learnt))
        if self.circuit is None:  # sft-lora: the response CE alone (route-only rows teach it nothing)
            ce = response_ce(logits, learnt) if logits.size(0) else logits.sum() * 0  # keeps the graph
            return {"ce": ce, "loss": ce}
        record = dict(self.attachment.record)
        alpha = self.attachment.alpha() if self.routing else None
        return loss_terms(logits, labels, record, alpha, self.circuit, objective,
                          lambda_route=self.cfg.lambda_route, lambda_ref=self.cfg.lambda_ref,
                          lambda_orth=self.cfg.lambda_orth, drift_tokens=self.cfg.drift_tokens,
                          attention_mask=attention_mask, route_per_token=self.cfg.route_loss == "per_token",
                          ce_rows=ce_rows, route_decision_share=self.cfg.route_decision_share,
                          route_rows=route_rows, lambda_off=self.cfg.lambda_off)

    @contextmanager
    def _forced_routing(self, objective: int, batch: int):
        """train.route_forcing: a random share of the rows (drawn from torch's RNG, so resume replays it)
        mixes objective o's pathway update alone; in training, for the full method only (the variants and
        ablations without objective supervision never see the objective)."""
        share = self.forcing[objective] if self.forcing else 0.0
        if share <= 0 or not self.training or not self.routing:
            yield
            return
        rows = torch.rand(batch) < share
        self.circuit.force_route(torch.where(rows, objective, -1))
        try:
            yield
        finally:
            self.circuit.force_route(None)

    @contextmanager
    def _only_pathway(self, objective: int):
        """Branched variant: a batch of objective o trains pathway o alone (the others muted), which is
        exactly the branch that pathway runs at decode time. Other variants run unchanged."""
        if self.circuit is None or not self.circuit.cfg.decodes_by_branch:
            yield
            return
        others = [name for j, name in enumerate(self.circuit.objectives) if j != objective]
        with preference(self.circuit, self.circuit.muted(*others)):
            yield
