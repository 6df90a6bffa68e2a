"""Reading the negotiation on real prompts: α where it decides the answer, never on the chat template.

Three readings per prompt, each averaged over the circuit's sites:
- `decision`: α at the decision position, the last prompt token, which predicts the first answer token;
- `prompt`: α averaged over the user's own prompt tokens (the chat template's system prompt and markers,
  which every prompt shares, are excluded: they carry no information about the prompt);
- `answer`: α averaged over the answer's tokens, when answers are given.
Routing accuracy is the share of a group's prompts whose decision α gives its expected objective the most say.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..attach import Attachment, capture, site_modules
from ..data import format_prompt


class Profile(NamedTuple):
    """Per-prompt negotiation weights, each (n_prompts, N)."""

    decision: torch.Tensor
    prompt: torch.Tensor
    answer: torch.Tensor | None


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_layout(tokenizer, prompt: str, answer: str | None, template: str) -> tuple[list[int], range, int, range]:
    """(token ids, user-token positions, decision position, answer-token positions) for one prompt.

    The ids are the formatted prompt's followed by the answer's, as in generation. The user's tokens are
    found by tokenising the template text before the prompt, and up to its end."""
    text = format_prompt(tokenizer, prompt, template)
    start = text.rfind(prompt)
    prompt_ids = _ids(tokenizer, text)
    if start < 0 or not prompt:  # a template that rewrites the prompt: fall back to every prompt token
        user = range(0, len(prompt_ids))
    else:
        user = range(len(_ids(tokenizer, text[:start])), len(_ids(tokenizer, text[:start + len(prompt)])))
    answer_ids = _ids(tokenizer, answer) if answer else []
    decision = len(prompt_ids) - 1
    return prompt_ids + answer_ids, user, decision, range(len(prompt_ids), len(prompt_ids) + len(answer_ids))


@torch.inference_mode()
def negotiation_profile(model, tokenizer, attachment: Attachment, prompts: list[str],
                        answers: list[str] | None = None, template: str = "auto",
                        batch_size: int = 16) -> Profile:
    """α at the decision position, over the user's prompt tokens and over the answer tokens, per prompt."""
    if not attachment.circuit.cfg.has_negotiation:
        raise ValueError(f"variant {attachment.circuit.cfg.variant!r} has no negotiation weights to read")
    if answers is not None and len(answers) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    # α depends only on the layers up to the deepest site: the forward pass stops there (no layer above it, no
    # LM head over the vocabulary), after the circuit's own hook has recorded α.
    sites = site_modules(model, attachment.circuit)
    deepest = max(sites, key=int)
    layouts = [prompt_layout(tokenizer, p, a, template)
               for p, a in zip(prompts, answers if answers is not None else [None] * len(prompts))]
    lengths = [len(ids) for ids, *_ in layouts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: little padding
    decision, user, answer = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = lengths[chunk[0]]
        ids = torch.tensor([layouts[i][0] + [pad] * (width - lengths[i]) for i in chunk], device=device)
        mask = torch.tensor([[1] * lengths[i] + [0] * (width - lengths[i]) for i in chunk], device=device)
        with capture({deepest: sites[deepest]}, stop_at=deepest):
            model(input_ids=ids, attention_mask=mask, use_cache=False)  # right padding: real tokens never see it
        alpha = attachment.alpha().float().cpu()  # (B, S, N)
        for row, i in enumerate(chunk):
            _, u, d, a = layouts[i]
            decision[i] = alpha[row, d]
            user[i] = alpha[row, list(u)].mean(0)
            if answers is not None:
                answer[i] = alpha[row, list(a)].mean(0) if len(a) else torch.full_like(alpha[row, d], float("nan"))
    return Profile(torch.stack(decision), torch.stack(user), torch.stack(answer) if answers is not None else None)


def profiles_by_group(model, tokenizer, attachment: Attachment, groups: dict[str, list[str]],
                      answers: dict[str, list[str]] | None = None, *, template: str = "auto",
                      batch_size: int = 16) -> dict[str, Profile]:
    """{group: per-prompt readings} for each non-empty group of raw (unformatted) prompts, over each group's
    answers when `answers` has them."""
    return {g: negotiation_profile(model, tokenizer, attachment, prompts, (answers or {}).get(g), template,
                                   batch_size)
            for g, prompts in groups.items() if prompts}


def summarize(profiles: dict[str, Profile], expected: dict[str, str], objectives: list[str]) -> dict:
    """Per group: n, the expected objective, mean α per reading, and routing accuracy at the decision position."""
    out = {}
    for group, prof in profiles.items():
        entry = {"n": int(prof.decision.shape[0]), "expected": expected.get(group)}
        for reading in ("decision", "prompt", "answer"):
            values = getattr(prof, reading)
            if values is not None:
                mean = values.nanmean(0)
                entry[reading] = {o: float(v) for o, v in zip(objectives, mean)}
        target = expected.get(group)
        if target in objectives:
            routed = prof.decision.argmax(-1) == objectives.index(target)
            entry["routing_accuracy"] = float(routed.float().mean())
        out[group] = entry
    return out
