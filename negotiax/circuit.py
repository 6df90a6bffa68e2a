"""The NegotiaX circuit: Module I (objective pathways) and Module II (negotiation).

Plain `nn.Module`s, tensors in and tensors out; nothing here knows about Hugging Face.
The circuit starts as the identity through one zero factor, the pathways' U: the negotiation's values are
the pathway deltas z_i - h, so they are zero too, and W_o can start small-random (DESIGN section 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("base", "pathways", "mac", "negotiax", "branched")
NEGOTIATING = ("mac", "negotiax")  # the variants with a negotiation (Module II)
SITES = ("attn", "block")
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "identity": lambda x: x}


@dataclass
class CircuitConfig:
    """What circuit to build and where to put it."""

    objectives: list[str] = field(default_factory=lambda: ["helpful", "harmless", "honest"])
    variant: str = "negotiax"  # base | pathways | mac | negotiax | branched
    layers: list[int] | None = None  # None: the middle decoder layer; negative indices count from the end
    site: str = "attn"  # attn: self-attention output before the residual; block: the block's output
    rank: int | str = 64  # pathway rank r, or "full" for a d x d map per objective
    head_dim: int = 64  # negotiation head size k
    activation: str = "silu"
    generic: bool = False  # ablation A1: no axis embeddings (and no routing loss in training)
    frozen: bool = False  # ablation A2: W_q, W_k, W_v frozen at initialisation
    # Soft cap c on the negotiation's scores before beta is added: each query's scores centred, then c * tanh(s / c),
    # so no objective's score exceeds another's by more than 2c and a preference beta of a few units can always
    # move alpha. None: no cap.
    logit_cap: float | None = None
    # Hard routing threshold theta: at each token, the objective with the most say (alpha) acts alone, and only
    # when its alpha reaches theta; below it no pathway acts and h passes unchanged. Teacher-forced training rows
    # are unaffected (they mix one objective alone already). None: the soft mixture alpha. Like logit_cap, it acts
    # only in the variants with a negotiation (mac, negotiax).
    gate: float | None = None
    layers_path: str | None = None  # explicit dotted path to the decoder ModuleList, if discovery fails

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"circuit.variant={self.variant!r}: choose one of {', '.join(VARIANTS)}")
        if self.site not in SITES:
            raise ValueError(f"circuit.site={self.site!r}: choose one of {', '.join(SITES)}")
        if len(self.objectives) < 1 or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"circuit.objectives={self.objectives!r}: give one or more distinct names")
        if self.rank != "full" and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"circuit.rank={self.rank!r}: give a positive integer or 'full'")
        if self.head_dim < 1:
            raise ValueError(f"circuit.head_dim={self.head_dim}: must be positive")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"circuit.activation={self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if self.logit_cap is not None and not (math.isfinite(self.logit_cap) and self.logit_cap > 0):
            raise ValueError(f"circuit.logit_cap={self.logit_cap!r}: give a positive finite number, or null for no cap")
        if self.gate is not None and not (0 < self.gate <= 1):
            raise ValueError(f"circuit.gate={self.gate!r}: give a threshold on alpha in (0, 1], or null for soft "
                             "mixing")
        if isinstance(self.layers, int):
            self.layers = [self.layers]

    def derived(self, **changes) -> "CircuitConfig":
        """This configuration with `changes`, for an ablation or a baseline built from a recipe: a variant without
        a negotiation drops the recipe's gate (it has no alpha to route by) unless `changes` names one."""
        if changes.get("variant", self.variant) not in NEGOTIATING:
            changes = {"gate": None, **changes}
        return replace(self, **changes)

    @property
    def n_objectives(self) -> int:
        return len(self.objectives)

    @property
    def has_circuit(self) -> bool:
        """False for `base`: the backbone runs alone."""
        return self.variant != "base"

    @property
    def has_negotiation(self) -> bool:
        """Module II mixes the pathways with weights α (mac, negotiax); the others have no α to read."""
        return self.variant in NEGOTIATING

    @property
    def decodes_by_branch(self) -> bool:
        """`branched`: each objective's pathway decodes as its own branch, combined by the preference."""
        return self.variant == "branched"

    @property
    def has_pathways_only(self) -> bool:
        """Module I alone (pathways, branched): a circuit that branched decoding can run."""
        return self.variant in ("pathways", "branched")

    @property
    def supervises_routing(self) -> bool:
        """The full method trains α to route each objective's batches to its pathway (A1 `generic` does not)."""
        return self.variant == "negotiax" and not self.generic


class SiteOutput(NamedTuple):
    """What one site's circuit computed: the new state and the quantities the losses read."""

    hidden: torch.Tensor  # h' (B, S, d)
    alpha: torch.Tensor | None  # negotiation weights (B, S, N); None without Module II
    drift: torch.Tensor  # mean_i ||z_i - h||^2 per token (B, S)
    sq_norms: torch.Tensor | None = None  # ||z_i - h||^2 per token and objective (B, S, N)


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class Pathways(nn.Module):
    """Module I: z_i = h + U_i act(D_i norm(h)), one low-rank subspace per objective."""

    def __init__(self, d: int, n: int, rank: int | str = 64, activation: str = "silu") -> None:
        super().__init__()
        self.full = rank == "full"
        self.act = ACTIVATIONS["identity" if self.full else activation]
        r = d if self.full else int(rank)
        self.n, self.r = n, r
        # D_i stacked as (N*r, d) so the down-projection of all objectives is one matmul.
        self.down = None if self.full else nn.Parameter(torch.randn(n * r, d) / math.sqrt(d))
        self.up = nn.Parameter(torch.zeros(n, d, r))  # U_i, zero: identity at init

    def directions(self) -> torch.Tensor:
        """Each objective's read-out directions (N, r, d), for the orthogonality loss and geometry."""
        if self.full:
            return self.up  # row j of W_i reads one input direction
        return self.down.view(self.n, self.r, -1)

    def deltas(self, h: torch.Tensor) -> torch.Tensor:
        """z_i - h for every objective: (B, S, N, d)."""
        x = rms_norm(h)
        if self.full:
            return torch.einsum("bsd,ned->bsne", x, self.up)
        a = self.act(x @ self.down.t()).unflatten(-1, (self.n, self.r))  # (B, S, N, r)
        return torch.einsum("bsnr,ndr->bsnd", a, self.up)


class Negotiation(nn.Module):
    """Module II: attention across the objective axis, per token.

    Queries and keys come from the full pathway states z_i (+ axis embeddings); values from the pathway
    deltas z_i - h only, so Delta is a mixture of objective-specific updates that alpha and beta gate: no
    term of h passes the negotiation untouched.
    """

    def __init__(self, d: int, n: int, head_dim: int = 64, axis_embeddings: bool = True,
                 logit_cap: float | None = None, gate: float | None = None) -> None:
        super().__init__()
        self.k = head_dim
        self.logit_cap = logit_cap
        self.gate = gate
        self.axis = nn.Parameter(torch.randn(n, d) * 0.02) if axis_embeddings else None
        self.qkv = nn.Parameter(torch.randn(d, 3 * head_dim) / math.sqrt(d))  # [W_q | W_k | W_v]
        # W_o small-random: the values (pathway deltas) are zero at init, so Delta = 0 all the same, and the
        # pathways' U get gradient from the first step (two zero factors would stall it).
        self.out = nn.Parameter(torch.randn(n * head_dim, d) / math.sqrt(n * head_dim))

    def scores(self, z: torch.Tensor, muted: torch.Tensor | None = None) -> torch.Tensor:
        """The negotiation's scores before beta: (B, S, N queries, N keys) from the pathway states z (B, S, N, d).
        With a logit cap, each query's scores are centred over the live keys (muted: True for a muted key,
        broadcastable to the scores), then capped at +-c; a muted key's score stays out of the centring, so a muted
        pathway changes nothing."""
        if self.axis is not None:
            z = z + self.axis
        w_q, w_k = self.qkv[:, :self.k], self.qkv[:, self.k:2 * self.k]
        logits = (z @ w_q) @ (z @ w_k).transpose(-1, -2) / math.sqrt(self.k)
        if self.logit_cap is None:
            return logits
        # centred first: the scores share a large common part (every state carries h's mean direction), which
        # softmax ignores but which would saturate the tanh and stall the scores' gradient
        live = torch.ones_like(logits) if muted is None else (~muted).to(logits.dtype).expand_as(logits)
        centre = (logits * live).sum(-1, keepdim=True) / live.sum(-1, keepdim=True).clamp(min=1)
        return self.logit_cap * torch.tanh((logits - centre) / self.logit_cap)

    def forward(self, z: torch.Tensor, deltas: torch.Tensor, bias: torch.Tensor,
                route: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, S, N, d) pathway states; deltas: z - h; bias: preference beta, (N,) or one row per
        sequence (B, N). -inf mutes an objective; +inf gives the +inf objectives all the say.
        route (training only, (B,) objective index or -1): rows >= 0 mix that objective's value alone
        (teacher-forced routing) while alpha still reports the negotiation's own weights.
        Returns (Delta (B, S, d), alpha (B, S, N))."""
        if bias.dim() == 2:  # one preference per sequence: broadcast over positions and queries
            bias = bias[:, None, None, :]
        muted, forced = torch.isneginf(bias), torch.isposinf(bias)
        logits = self.scores(z, muted) + bias.masked_fill(forced, 0.0)
        v = deltas @ self.qkv[:, 2 * self.k:]  # (B, S, N, k)
        if forced.any():  # beta = +inf: attention only to the forced keys (uniform among them if several)
            rows = forced.expand_as(logits).any(-1, keepdim=True)
            logits = torch.where(rows & ~forced, torch.full_like(logits, float("-inf")), logits)
            logits = torch.where(rows & forced, torch.zeros_like(logits), logits)
        logits = logits.masked_fill(muted, float("-inf"))
        attn = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all muted -> zeros, not NaN
        # A muted objective also loses its query row: its pathway contributes nothing at all.
        keep = (~muted).to(attn.dtype)
        keep = keep[:, None] if keep.dim() == 1 else keep.transpose(-1, -2)  # (N, 1) or (B, 1, N, 1): per query
        alpha = (attn * keep).sum(-2) / keep.sum(-2).clamp(min=1)  # mean over live queries
        mix = attn
        if self.gate is not None:  # every query mixes the top objective alone, as in teacher-forced training
            top, best = alpha.max(-1)
            chosen = F.one_hot(best, attn.shape[-1]).to(attn.dtype) * (top >= self.gate).to(attn.dtype)[..., None]
            mix = chosen.unsqueeze(-2).expand_as(attn)
        if route is not None:
            teacher = F.one_hot(route.clamp(min=0), attn.shape[-1]).to(attn.dtype)[:, None, None, :]
            mix = torch.where((route >= 0)[:, None, None, None], teacher.expand_as(attn), mix)
        mixed = (mix @ v) * keep  # (B, S, N, k)
        return mixed.flatten(-2) @ self.out, alpha


class SiteCircuit(nn.Module):
    """The circuit at one injection site: h -> h' = h + Delta."""

    def __init__(self, d: int, cfg: CircuitConfig) -> None:
        super().__init__()
        if not cfg.has_circuit:
            raise ValueError("variant 'base' has no circuit to build")
        n = cfg.n_objectives
        self.variant = cfg.variant
        self.pathways = Pathways(d, n, cfg.rank, cfg.activation)
        self.negotiation = None
        if cfg.has_negotiation:
            self.negotiation = Negotiation(d, n, cfg.head_dim, axis_embeddings=not cfg.generic,
                                           logit_cap=cfg.logit_cap, gate=cfg.gate)
            self.negotiation.qkv.requires_grad_(not cfg.frozen)
        self.register_buffer("bias", torch.zeros(n), persistent=False)  # preference beta
        self.route: torch.Tensor | None = None  # teacher-forced routing per row, set by the trainer only

    def forward(self, h: torch.Tensor, branch: int | None = None) -> SiteOutput:
        deltas = self.pathways.deltas(h)  # (B, S, N, d)
        sq_norms = deltas.pow(2).sum(-1)
        drift = sq_norms.mean(-1)
        if branch is not None:  # branched variant: one objective's pathway state alone
            return SiteOutput(h + deltas[..., branch, :], None, drift, sq_norms)
        if self.negotiation is None:  # pathways: fixed uniform fusion over live objectives
            keep = (~torch.isneginf(self.bias)).to(h.dtype)
            if keep.dim() == 2:  # (B, N): one preference per sequence
                keep = keep[:, None, :]
            fused = (deltas * keep[..., None]).sum(-2) / keep.sum(-1, keepdim=True).clamp(min=1)
            return SiteOutput(h + fused, None, drift, sq_norms)
        delta, alpha = self.negotiation(h.unsqueeze(-2) + deltas, deltas, self.bias, self.route)
        return SiteOutput(h + delta, alpha, drift, sq_norms)


class Circuit(nn.Module):
    """All sites' circuits for one backbone, keyed by decoder layer index."""

    def __init__(self, cfg: CircuitConfig, hidden_size: int, layers: list[int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.hidden_size = hidden_size
        self.layers = list(layers)
        self.sites = nn.ModuleDict({str(i): SiteCircuit(hidden_size, cfg) for i in self.layers})

    @property
    def objectives(self) -> list[str]:
        return list(self.cfg.objectives)

    def index(self, objective: str) -> int:
        if objective not in self.cfg.objectives:
            raise ValueError(f"unknown objective {objective!r}; this circuit has {self.cfg.objectives}")
        return self.cfg.objectives.index(objective)

    def preference_vector(self, beta: dict[str, float] | None = None) -> torch.Tensor:
        """beta as an (N,) tensor in objective order; unnamed objectives are 0. NaN is refused."""
        values = torch.zeros(self.cfg.n_objectives)
        for name, value in (beta or {}).items():
            if math.isnan(float(value)):
                raise ValueError(f"preference for {name!r} is NaN; give a number, -inf (mute) or +inf")
            values[self.index(name)] = float(value)
        return values

    def set_preference(self, beta: dict[str, float] | list[dict[str, float]] | None = None) -> None:
        """Inference-time preference: beta per objective (0 default, -inf mutes, +inf forces); unnamed ones
        reset to 0. A list gives one preference per sequence of the next batches (row b of the batch gets
        beta[b]), so requests with different trade-offs decode together."""
        if isinstance(beta, (list, tuple)):
            values = torch.stack([self.preference_vector(b) for b in beta])
        else:
            values = self.preference_vector(beta)
        for site in self.sites.values():
            site.bias = values.to(device=site.bias.device, dtype=site.bias.dtype)

    def preference(self) -> dict[str, float]:
        """The shared preference; raises when a per-sequence preference is set (see `row_preferences`)."""
        bias = next(iter(self.sites.values())).bias
        if bias.dim() != 1:
            raise ValueError("this circuit has one preference per sequence; read row_preferences()")
        return {name: float(b) for name, b in zip(self.cfg.objectives, bias.tolist())}

    def row_preferences(self) -> list[dict[str, float]] | None:
        """The per-sequence preferences, or None when one preference is shared by every sequence."""
        bias = next(iter(self.sites.values())).bias
        if bias.dim() == 1:
            return None
        return [{name: float(b) for name, b in zip(self.cfg.objectives, row)} for row in bias.tolist()]

    def muted(self, *objectives: str) -> dict[str, float]:
        """The current preference with `objectives` muted (beta = -inf): for `set_preference` or
        `attach.preference(...)`."""
        return {**self.preference(), **{o: float("-inf") for o in objectives}}

    def mute(self, *objectives: str) -> None:
        """Mute objectives (beta = -inf) on top of the current preference."""
        self.set_preference(self.muted(*objectives))

    def set_gate(self, gate: float | None) -> None:
        """Hard routing at threshold `gate` (see CircuitConfig.gate) on a built or loaded circuit; None: soft."""
        if not self.cfg.has_negotiation:
            raise ValueError(f"circuit.gate={gate}: variant {self.cfg.variant!r} has no negotiation to route by")
        self.cfg = replace(self.cfg, gate=gate)  # the recipe's checks, naming circuit.gate
        for site in self.sites.values():
            site.negotiation.gate = gate

    def force_route(self, route: torch.Tensor | None) -> None:
        """Training only: rows b with route[b] = j >= 0 mix objective j's update alone (teacher-forced
        routing); None restores the negotiation's own mixing."""
        for site in self.sites.values():
            site.route = None if route is None else route.to(site.bias.device)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
