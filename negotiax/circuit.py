"""The NegotiaX circuit: Module I (objective pathways) and Module II (negotiation).

Plain `nn.Module`s, tensors in and tensors out; nothing here knows about Hugging Face.
Both modules start as the identity: pathway outputs U and the negotiation's W_o are zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("base", "pathways", "mac", "negotiax", "branched")
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
        if isinstance(self.layers, int):
            self.layers = [self.layers]

    @property
    def n_objectives(self) -> int:
        return len(self.objectives)


class SiteOutput(NamedTuple):
    """What one site's circuit computed: the new state and the quantities the losses read."""

    hidden: torch.Tensor  # h' (B, S, d)
    alpha: torch.Tensor | None  # negotiation weights (B, S, N); None without Module II
    drift: torch.Tensor  # mean_i ||z_i - h||^2 per token (B, S)


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
    """Module II: attention across the objective axis, per token; W_o zero so Delta = 0 at init."""

    def __init__(self, d: int, n: int, head_dim: int = 64, axis_embeddings: bool = True) -> None:
        super().__init__()
        self.k = head_dim
        self.axis = nn.Parameter(torch.randn(n, d) * 0.02) if axis_embeddings else None
        self.qkv = nn.Parameter(torch.randn(d, 3 * head_dim) / math.sqrt(d))  # [W_q | W_k | W_v]
        self.out = nn.Parameter(torch.zeros(n * head_dim, d))  # W_o

    def forward(self, z: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, S, N, d) pathway states; bias: (N,) preference beta. Returns (Delta, alpha)."""
        if self.axis is not None:
            z = z + self.axis
        q, k, v = (z @ self.qkv).split(self.k, dim=-1)  # each (B, S, N, k)
        muted = torch.isneginf(bias)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.k) + bias  # bias on the key axis
        attn = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all muted -> zeros, not NaN
        mixed = attn @ v  # (B, S, N, k)
        keep = (~muted).to(attn.dtype)
        # A muted objective also loses its query row: its pathway contributes nothing at all.
        mixed = mixed * keep[:, None]
        alpha = (attn * keep[:, None]).sum(-2) / keep.sum().clamp(min=1)  # mean over live queries
        return mixed.flatten(-2) @ self.out, alpha


class SiteCircuit(nn.Module):
    """The circuit at one injection site: h -> h' = h + Delta."""

    def __init__(self, d: int, cfg: CircuitConfig) -> None:
        super().__init__()
        if cfg.variant == "base":
            raise ValueError("variant 'base' has no circuit to build")
        n = cfg.n_objectives
        self.variant = cfg.variant
        self.pathways = Pathways(d, n, cfg.rank, cfg.activation)
        self.negotiation = None
        if cfg.variant in ("mac", "negotiax"):
            self.negotiation = Negotiation(d, n, cfg.head_dim, axis_embeddings=not cfg.generic)
            self.negotiation.qkv.requires_grad_(not cfg.frozen)
        self.register_buffer("bias", torch.zeros(n), persistent=False)  # preference beta

    def forward(self, h: torch.Tensor, branch: int | None = None) -> SiteOutput:
        deltas = self.pathways.deltas(h)  # (B, S, N, d)
        drift = deltas.pow(2).sum(-1).mean(-1)
        if branch is not None:  # branched variant: one objective's pathway state alone
            return SiteOutput(h + deltas[..., branch, :], None, drift)
        if self.negotiation is None:  # pathways: fixed uniform fusion over live objectives
            keep = (~torch.isneginf(self.bias)).to(h.dtype)
            fused = (deltas * keep[:, None]).sum(-2) / keep.sum().clamp(min=1)
            return SiteOutput(h + fused, None, drift)
        delta, alpha = self.negotiation(h.unsqueeze(-2) + deltas, self.bias)
        return SiteOutput(h + delta, alpha, drift)


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

    def set_preference(self, beta: dict[str, float] | None = None) -> None:
        """Inference-time preference: beta per objective (0 default, -inf mutes); unnamed ones reset to 0."""
        values = torch.zeros(self.cfg.n_objectives)
        for name, value in (beta or {}).items():
            values[self.index(name)] = float(value)
        for site in self.sites.values():
            site.bias.copy_(values.to(site.bias.device))

    def preference(self) -> dict[str, float]:
        bias = next(iter(self.sites.values())).bias
        return {name: float(b) for name, b in zip(self.cfg.objectives, bias.tolist())}

    def mute(self, *objectives: str) -> None:
        """Mute objectives (beta = -inf) on top of the current preference."""
        beta = self.preference()
        beta.update({o: float("-inf") for o in objectives})
        self.set_preference(beta)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
