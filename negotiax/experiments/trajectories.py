"""Layer-wise hidden-state trajectories, base vs trained, pooled over real tokens only.

Each prompt's state at every layer is the mean of its hidden states over the tokens its attention mask
marks as real (right padding, so positions are unaffected; padding never enters the mean). The base model
is the same network with every objective muted, which makes the circuit's Δ exactly zero.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attach import Attachment, preference
from ..backbone import padding_side


@torch.inference_mode()
def pooled_hidden_states(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 8) -> torch.Tensor:
    """(layers + 1, len(texts), d): embeddings and every layer's output, mean over each prompt's real tokens."""
    device = next(model.parameters()).device
    chunks = []
    with padding_side(tokenizer, "right"):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            out = model(**enc, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            states = torch.stack(out.hidden_states).float()  # (L+1, B, S, d)
            mask = enc["attention_mask"].to(states.dtype)[None, :, :, None]
            chunks.append(((states * mask).sum(2) / mask.sum(2)).cpu())
    return torch.cat(chunks, dim=1)


def base_and_trained(model: nn.Module, tokenizer, attachment: Attachment, groups: dict[str, list[str]],
                     batch_size: int = 8) -> dict[str, dict[str, torch.Tensor]]:
    """{group: {"base": (L+1, n, d), "trained": (L+1, n, d)}} at the circuit's current preference."""
    circuit = attachment.circuit
    muted = {o: float("-inf") for o in circuit.objectives}  # the circuit silenced: the base model
    out = {}
    for name, texts in groups.items():
        trained = pooled_hidden_states(model, tokenizer, texts, batch_size)
        with preference(attachment, muted):
            base = pooled_hidden_states(model, tokenizer, texts, batch_size)
        out[name] = {"base": base, "trained": trained}
    return out


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, 2 components, explained fraction) of the rows of x."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    explained = float((s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12))
    return mean, vt[:2], explained


def trajectory_summary(states: dict[str, dict[str, torch.Tensor]], point_layers: list[int] = ()) -> dict:
    """Per layer: a PCA fitted on all groups' base + trained states, each group's mean position in it,
    the relative shift ||mean trained - mean base|| / ||mean base||, and the harmful/benign-style separation
    (distance between group means over the mean within-group spread) for base and trained. At
    `point_layers` every prompt's PCA coordinates are kept too."""
    groups = list(states)
    n_layers = next(iter(states.values()))["base"].shape[0]
    layers = []
    for layer in range(n_layers):
        rows = {(g, kind): states[g][kind][layer].numpy() for g in groups for kind in ("base", "trained")}
        mean, comps, explained = _pca2(np.concatenate(list(rows.values())))
        entry = {"layer": layer, "explained": explained, "groups": {}}
        for g in groups:
            b, t = rows[(g, "base")], rows[(g, "trained")]
            entry["groups"][g] = {
                "base_xy": ((b.mean(0) - mean) @ comps.T).tolist(),
                "trained_xy": ((t.mean(0) - mean) @ comps.T).tolist(),
                "shift": float(np.linalg.norm(t.mean(0) - b.mean(0)) / max(np.linalg.norm(b.mean(0)), 1e-12)),
            }
        entry["separation"] = {kind: _separation([rows[(g, kind)] for g in groups]) for kind in ("base", "trained")}
        if layer in point_layers:
            entry["points"] = {g: {kind: ((rows[(g, kind)] - mean) @ comps.T).tolist() for kind in ("base", "trained")}
                               for g in groups}
        layers.append(entry)
    return {"groups": groups, "layers": layers}


def _separation(sets: list[np.ndarray]) -> float | None:
    """Mean pairwise distance between group means / mean within-group distance to the mean."""
    if len(sets) < 2:
        return None
    means = [s.mean(0) for s in sets]
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[i + 1:]])
    within = np.mean([np.linalg.norm(s - m, axis=1).mean() for s, m in zip(sets, means)])
    return float(between / max(within, 1e-12))
