"""Geometry of the objective pathways: how far apart their subspaces and their actual shifts are,
each against a random baseline of the same shapes.

- read overlap: mean squared cosine of the principal angles between the row spaces of D_i and D_j
  (1 = same subspace, r/d expected for random subspaces);
- write overlap: the same for the column spaces of U_i;
- shift cosine: cosine between the objectives' mean shifts z_i - h over real tokens of real prompts
  (the direction each pathway actually moves the state), against the |cosine| of random d-vectors.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attach import Attachment, capture, site_modules
from ..backbone import padding_side
from ..circuit import Circuit


def _basis(m: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (d, k) of the column space of m (d, r), k = its numerical rank."""
    q, r = torch.linalg.qr(m.double())
    keep = r.diagonal().abs() > 1e-10 * max(float(r.diagonal().abs().max()), 1e-30)
    return q[:, keep]


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cos^2 of the principal angles between the column spaces of a (d, r) and b (d, r')."""
    qa, qb = _basis(a), _basis(b)
    k = min(qa.shape[1], qb.shape[1])
    if k == 0:
        return float("nan")
    return float((qa.T @ qb).pow(2).sum() / k)


def overlap_matrix(mats: list[torch.Tensor]) -> list[list[float]]:
    return [[overlap(a, b) for b in mats] for a in mats]


def random_overlap(d: int, r: int, draws: int = 100, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vals = [overlap(torch.randn(d, r, generator=g), torch.randn(d, r, generator=g)) for _ in range(draws)]
    return {"mean": float(np.mean(vals)), "p95": float(np.percentile(vals, 95)), "draws": draws}


def random_cosine(d: int, draws: int = 1000, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(draws, d, generator=g), torch.randn(draws, d, generator=g)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).abs().numpy()
    return {"mean_abs": float(cos.mean()), "p95_abs": float(np.percentile(cos, 95)), "draws": draws}


def subspace_geometry(circuit: Circuit, draws: int = 100, seed: int = 0) -> dict:
    """Per site: read and write overlap matrices between objectives, and the random baseline."""
    out = {}
    for layer, site in circuit.sites.items():
        paths = site.pathways
        writes = [paths.up[i].detach().cpu() for i in range(paths.n)]  # U_i: (d, r)
        reads = [paths.directions()[i].detach().cpu().T for i in range(paths.n)]  # D_i^T: (d, r)
        d, r = writes[0].shape
        out[layer] = {"read_overlap": overlap_matrix(reads), "write_overlap": overlap_matrix(writes),
                      "random_baseline": random_overlap(d, min(r, d), draws, seed), "rank": r, "hidden": d}
    return out


@torch.inference_mode()
def mean_shifts(model: nn.Module, tokenizer, attachment: Attachment, texts: list[str],
                batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Per site: (N, d) mean of z_i - h over the real tokens of `texts`, captured at the site's input h."""
    circuit = attachment.circuit
    sums = {k: torch.zeros(circuit.cfg.n_objectives, circuit.hidden_size, dtype=torch.float64) for k in circuit.sites}
    device = next(model.parameters()).device
    n_tokens = 0
    # prepend: see the site's own output h, before the circuit's hook replaces it with h'.
    with padding_side(tokenizer, "right"), capture(site_modules(model, circuit), prepend=True) as captured:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            model(**enc, use_cache=False, logits_to_keep=1)
            n_tokens += int(enc["attention_mask"].sum())
            for key, h in captured.items():
                site = circuit.sites[key]
                deltas = site.pathways.deltas(h.float().to(site.bias.dtype))  # (B, S, N, d)
                m = enc["attention_mask"].to(deltas.dtype)[:, :, None, None]
                sums[key] += (deltas * m).sum((0, 1)).double().cpu()
    return {k: (v / max(n_tokens, 1)).float() for k, v in sums.items()}


def shift_geometry(shifts: dict[str, torch.Tensor], draws: int = 1000, seed: int = 0) -> dict:
    """Per site: cosine matrix of the objectives' mean shifts and the random-vector baseline."""
    out = {}
    for key, s in shifts.items():
        unit = torch.nn.functional.normalize(s, dim=-1)
        out[key] = {"shift_cosine": (unit @ unit.T).tolist(), "shift_norm": s.norm(dim=-1).tolist(),
                    "random_baseline": random_cosine(s.shape[-1], draws, seed)}
    return out
