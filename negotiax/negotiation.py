"""Reading the negotiation: mean weights α per group of prompts, over real tokens only (padding excluded)."""
from __future__ import annotations

import torch

from .attach import Attachment


@torch.inference_mode()
def prompt_alphas(model, tokenizer, attachment: Attachment, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """Per prompt, α averaged over its real tokens and the circuit's sites: (len(texts), N)."""
    if not attachment.circuit.sites or attachment.circuit.cfg.variant not in ("mac", "negotiax"):
        raise ValueError(f"variant {attachment.circuit.cfg.variant!r} has no negotiation weights to read")
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    rows = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            model(**enc)
            mask = enc["attention_mask"].unsqueeze(-1).to(torch.float32)  # (B, S, 1)
            alpha = attachment.alpha().to(torch.float32)  # (B, S, N)
            rows.append(((alpha * mask).sum(1) / mask.sum(1)).cpu())
    finally:
        tokenizer.padding_side = side
    return torch.cat(rows)


def alpha_by_group(model, tokenizer, attachment: Attachment, groups: dict[str, list[str]],
                   batch_size: int = 16) -> dict[str, dict[str, float]]:
    """{group: {objective: mean α}} for each named group of (already formatted) prompts."""
    names = attachment.circuit.objectives
    out = {}
    for group, texts in groups.items():
        if texts:
            mean = prompt_alphas(model, tokenizer, attachment, texts, batch_size).mean(0)
            out[group] = {name: float(v) for name, v in zip(names, mean)}
    return out
