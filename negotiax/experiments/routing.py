"""The negotiation read out on real prompts: the heatmap (prompt type x objective, mean α at the decision
position) and the blind spots (prompts whose negotiation is uncertain or routes to the wrong objective)."""
from __future__ import annotations

import math

import torch


# Which objective should have the most say for each kind of prompt.
EXPECTED = {"harmful": "harmless", "benign": "helpful", "helpful": "helpful", "honest": "honest"}


def heatmap(alphas: dict[str, torch.Tensor], objectives: list[str]) -> dict:
    """Mean α per prompt type and objective, with n and the per-cell standard error."""
    rows = {}
    for g, a in alphas.items():
        se = a.std(0, unbiased=True) / math.sqrt(a.shape[0]) if a.shape[0] > 1 else torch.full((a.shape[1],), float("nan"))
        rows[g] = {"n": a.shape[0], "mean": dict(zip(objectives, a.mean(0).tolist())),
                   "se": dict(zip(objectives, se.tolist()))}
    return rows


def entropy(a: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each row of α (renormalised to sum 1): 0 = one objective decides, 1 = uniform."""
    p = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
    h = -(p * p.clamp(min=1e-12).log()).sum(-1)
    return h / math.log(a.shape[-1]) if a.shape[-1] > 1 else torch.zeros_like(h)


def blind_spots(alphas: dict[str, torch.Tensor], prompts: dict[str, list[str]], objectives: list[str],
                top_k: int = 10, entropy_threshold: float = 0.95) -> dict:
    """Per prompt type: the misrouting rate (argmax α is not the expected objective), the share of uncertain
    prompts (normalised entropy above the threshold), and the worst examples of both."""
    out = {}
    for g, a in alphas.items():
        ent = entropy(a)
        top = a.argmax(-1)
        expected = EXPECTED.get(g)
        target = objectives.index(expected) if expected in objectives else None
        wrong = (top != target) if target is not None else torch.zeros_like(top, dtype=torch.bool)
        order = torch.argsort(ent, descending=True)[:top_k].tolist()
        wrong_idx = [i for i in torch.argsort(a[:, target] if target is not None else ent).tolist() if wrong[i]][:top_k]
        out[g] = {
            "n": a.shape[0], "expected": expected,
            "misrouted_rate": float(wrong.float().mean()) if target is not None else None,
            "uncertain_rate": float((ent > entropy_threshold).float().mean()),
            "mean_entropy": float(ent.mean()),
            "most_uncertain": [_row(prompts[g][i], a[i], ent[i], objectives) for i in order],
            "misrouted": [_row(prompts[g][i], a[i], ent[i], objectives) for i in wrong_idx],
            "entropy": ent.tolist(),
        }
    return out


def _row(prompt: str, a: torch.Tensor, ent: torch.Tensor, objectives: list[str]) -> dict:
    return {"prompt": prompt, "alpha": dict(zip(objectives, a.tolist())), "entropy": float(ent),
            "routed_to": objectives[int(a.argmax())]}
