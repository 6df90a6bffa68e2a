"""The `branched` variant: each objective's pathway runs the rest of the network as its own branch.

The batch is stacked N times (one copy per objective, objective j in the j-th chunk) and the attachment's
`branches` flag makes the hook apply pathway j alone to chunk j. At every decoding step the N next-token
log-probability vectors are combined with preference weights w (w_j >= 0, sum 1) as a weighted product of
experts, log p(t) = sum_j w_j log p_j(t) (renormalised), and one token is chosen for all N copies, so the
branches share one text and each keeps its own KV cache rows. Weights come from `weights=` (a dict or list,
normalised to sum 1) or, when absent, from the circuit's preference β as softmax(β) (β = 0: uniform; a muted
objective, β = -inf, gets weight 0).

`decode()` is the one decoding loop used here and by the profiler: with `n_branches=1` it is plain greedy or
sampled decoding, so base / pathways / negotiax / branched are timed by the same code.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from ..attach import Attachment
from ..backbone import padding_side


@dataclass
class DecodeResult:
    """Tokens generated per row (stopping at EOS) and how long the two phases took."""

    tokens: list[list[int]]  # new tokens of each row, up to and including its EOS; never padding
    prefill_s: float = 0.0  # the forward pass over the prompts
    decode_s: float = 0.0  # every later step
    step_s: list[float] = field(default_factory=list)  # each decoding step after the prefill

    @property
    def token_counts(self) -> list[int]:
        return [len(t) for t in self.tokens]


@dataclass
class BranchedOutput:
    texts: list[str]
    token_counts: list[int]
    weights: list[float]
    result: DecodeResult


def eos_ids(model: nn.Module, tokenizer=None) -> list[int]:
    """Every token id that ends a row: the tokenizer's EOS and the model's generation config EOS ids."""
    ids: set[int] = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return sorted(ids)


def preference_weights(attachment: Attachment | None, n: int,
                       weights: dict[str, float] | Sequence[float] | None = None) -> torch.Tensor:
    """Normalised combination weights (N,): explicit weights, else softmax of the circuit's β."""
    if weights is None:
        if attachment is None:
            return torch.full((n,), 1.0 / n)
        beta = torch.tensor(list(attachment.circuit.preference().values()), dtype=torch.float32)
        if torch.isneginf(beta).all():
            raise ValueError("every objective is muted (β = -inf); branched decoding needs at least one live branch")
        return torch.softmax(beta, dim=0)
    if isinstance(weights, dict):
        if attachment is None:
            raise ValueError("weights given by objective name need an attachment to know the objectives")
        values = [0.0] * n
        for name, w in weights.items():
            values[attachment.circuit.index(name)] = float(w)
    else:
        values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"weights={list(values)}: give one weight per objective ({n})")
    w = torch.tensor(values, dtype=torch.float32)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights={values}: weights must be >= 0 and not all zero")
    return w / w.sum()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as Hugging Face `generate` computes them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           eos: Sequence[int] = (), n_branches: int = 1, weights: torch.Tensor | None = None,
           do_sample: bool = False, temperature: float = 1.0, generator: torch.Generator | None = None,
           ) -> DecodeResult:
    """Left-padded prompts (B, S) -> new tokens per row, with a KV cache; branches stacked N times.

    A row that ends (an EOS) leaves the batch at once: its KV cache rows, mask and position go, so later steps
    compute only the rows still decoding (Hugging Face `generate` keeps padding finished rows to the end). With
    many short answers, such as refusals, most of a batch's steps get cheaper; the tokens are the same.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be positive when sampling")
    device = input_ids.device
    batch = input_ids.shape[0]
    ids = input_ids.repeat(n_branches, 1)  # chunk j (rows j*B .. j*B+B-1) is objective j's branch
    mask = attention_mask.repeat(n_branches, 1)
    w = None if weights is None else weights.to(device=device, dtype=torch.float32).view(n_branches, 1, 1)
    eos_t = torch.tensor(list(eos), device=device, dtype=torch.long)
    alive = torch.arange(batch, device=device)  # the rows still decoding, in the batch's order
    out: list[list[int]] = [[] for _ in range(batch)]
    result = DecodeResult(tokens=out)
    past, step_in, pos = None, ids, _positions(mask)
    for step in range(max_new_tokens):
        _sync(device)
        start = time.perf_counter()
        # transformers >= 5.24 names the KV cache `cache` (pyproject's floor); logits_to_keep=1 skips the
        # prompt's vocab projection.
        outputs = model(input_ids=step_in, attention_mask=mask, position_ids=pos, cache=past, use_cache=True,
                        logits_to_keep=1)
        logits, past = outputs.logits[:, -1].float(), outputs.cache
        logp = torch.log_softmax(logits, dim=-1).view(n_branches, len(alive), -1)
        combined = logp[0] if n_branches == 1 else (logp * (w if w is not None else 1.0 / n_branches)).sum(0)
        if do_sample:
            probs = torch.softmax(combined / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            nxt = combined.argmax(-1)
        for row, token in zip(alive.tolist(), nxt.tolist()):
            out[row].append(token)
        ended = torch.isin(nxt, eos_t) if eos_t.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        last = bool(ended.all()) or step == max_new_tokens - 1
        if not last and bool(ended.any()):  # the ended rows leave the batch, in every branch
            keep = (~ended).nonzero().flatten()
            rows = (torch.arange(n_branches, device=device)[:, None] * len(alive) + keep).flatten()
            past.batch_select_indices(rows)
            mask, alive, nxt = mask[rows], alive[keep], nxt[keep]
        _sync(device)
        elapsed = time.perf_counter() - start
        if step == 0:
            result.prefill_s = elapsed
        else:
            result.decode_s += elapsed
            result.step_s.append(elapsed)
        if last:
            break
        step_in = nxt.repeat(n_branches).unsqueeze(-1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        pos = _positions(mask)[:, -1:]
    return result


def encode_prompts(tokenizer, prompts: Sequence[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask): new tokens then line up at the right edge."""
    if not prompts:
        raise ValueError("no prompts given")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with padding_side(tokenizer, "left"):
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    return int(pad)


def branched_generate(model: nn.Module, tokenizer, prompts: Sequence[str], attachment: Attachment,
                      max_new_tokens: int = 64, weights: dict[str, float] | Sequence[float] | None = None,
                      do_sample: bool = False, temperature: float = 1.0, seed: int | None = None,
                      ) -> BranchedOutput:
    """Decode `prompts` (already formatted) with one branch per objective, combined by preference weights."""
    if not attachment.attached:
        raise ValueError("the attachment is detached; attach the pathways circuit before branched decoding")
    if not attachment.circuit.cfg.has_pathways_only:
        raise ValueError(f"branched decoding runs Module I pathways alone; this circuit is "
                         f"{attachment.circuit.cfg.variant!r} (train a 'pathways' or 'branched' circuit)")
    n = attachment.circuit.cfg.n_objectives
    w = preference_weights(attachment, n, weights)
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts, device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    with attachment.branched():
        result = decode(model, ids, mask, max_new_tokens, eos=eos_ids(model, tokenizer),
                        n_branches=n, weights=w, do_sample=do_sample, temperature=temperature, generator=generator)
    texts = tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
    return BranchedOutput(texts, result.token_counts, w.tolist(), result)


def greedy_generate(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64) -> DecodeResult:
    """Plain greedy decoding through the same loop (whatever circuit is attached applies as usual)."""
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts, device)
    return decode(model, ids, mask, max_new_tokens, eos=eos_ids(model, tokenizer))


class BranchedLM(nn.Module):
    """The branched model as one language model: its logits are the preference-combined log-probs.

    forward(input_ids, attention_mask) runs the N branches on the stacked batch and returns
    sum_j w_j log p_j per position, so log-likelihood metrics (MC1/MC2, reference NLL) score exactly the
    distribution that branched decoding samples from (a log-softmax of it renormalises the product).
    It keeps no KV cache (`returns_cache = False`), so scorers run each sequence whole.
    """

    returns_cache = False

    def __init__(self, model: nn.Module, attachment: Attachment,
                 weights: dict[str, float] | Sequence[float] | None = None) -> None:
        super().__init__()
        self.model = model
        self.attachment = attachment
        self.n = attachment.circuit.cfg.n_objectives
        self.register_buffer("weights", preference_weights(attachment, self.n, weights), persistent=False)
        self.config = model.config
        self.generation_config = model.generation_config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        batch = input_ids.shape[0]
        ids = input_ids.repeat(self.n, 1)
        mask = attention_mask.repeat(self.n, 1) if attention_mask is not None else None
        with self.attachment.branched():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        logp = torch.log_softmax(logits, dim=-1).view(self.n, batch, *logits.shape[1:])
        w = self.weights.to(logp.device).view(self.n, *([1] * (logp.dim() - 1)))
        return CausalLMOutput(logits=(logp * w).sum(0))

