"""Features for the local judges: pooled hidden states of a frozen small LM, cached on disk.

A text is a (context, answer) pair: the prompt or question, and the response or answer. Long texts are
truncated so that the context's end and the answer's start survive, since that is where a judge looks.
The backbone runs only up to the deepest layer needed: a hook on that block stops the forward pass.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...attach import capture, find_decoder_layers

log = logging.getLogger(__name__)

POOLINGS = ("mean", "last", "answer-mean")  # all real tokens; last real token; the answer's tokens only
TEMPLATES = {
    "safety": ("User: {context}\nAssistant:", " {answer}"),
    "qa": ("Q: {context}\nA:", " {answer}"),  # the GPT-judge format, without its "True:" suffix
}


@dataclass(frozen=True)
class FeatureSpec:
    """How texts become feature vectors."""

    template: str = "safety"  # a key of TEMPLATES
    max_tokens: int = 192  # context + answer tokens per text
    max_context_tokens: int = 64  # the context keeps its last tokens, at most this many
    layers: tuple[int, ...] = (6, 9, 12, 15, 18)  # block outputs, 1-based (hidden_states[L])
    poolings: tuple[str, ...] = POOLINGS

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"template={self.template!r}: choose one of {', '.join(TEMPLATES)}")
        if not 0 < self.max_context_tokens < self.max_tokens:
            raise ValueError(f"need 0 < max_context_tokens ({self.max_context_tokens}) < max_tokens "
                             f"({self.max_tokens})")
        if not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers={self.layers}: give 1-based block indices (1 = first block's output)")
        bad = [p for p in self.poolings if p not in POOLINGS]
        if bad:
            raise ValueError(f"poolings {bad} unknown; choose from {', '.join(POOLINGS)}")


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def feature_model_identity(model: nn.Module, tokenizer, name: str = "") -> dict:
    """What a head depends on: architecture, sizes, a hash of the config and one of the vocabulary."""
    config = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures",
                "use_cache", "output_hidden_states", "return_dict"):
        config.pop(key, None)
    vocab = sorted(tokenizer.get_vocab().items())
    return {
        "name": name or getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "model_type": model.config.model_type,
        "hidden_size": int(model.config.hidden_size),
        "num_layers": len(find_decoder_layers(model)),
        "config_sha256": _sha(json.dumps(config, sort_keys=True, default=str)),
        "tokenizer_sha256": _sha(json.dumps(vocab)),
    }


def encode(tokenizer, spec: FeatureSpec, context: str, answer: str) -> tuple[list[int], int]:
    """Token ids of one text and where its answer starts, truncated to the spec's budget."""
    head, tail = TEMPLATES[spec.template]
    ctx = tokenizer(head.format(context=context), add_special_tokens=False)["input_ids"]
    ans = tokenizer(tail.format(answer=answer), add_special_tokens=False)["input_ids"]
    ctx = ctx[-spec.max_context_tokens:]
    ans = ans[: spec.max_tokens - len(ctx)]
    return ctx + ans, len(ctx)


def _pool(hidden: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor, poolings) -> torch.Tensor:
    """(B, P, d): each pooling of the block output over real tokens (mask is 1 on real tokens)."""
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    answer = mask * (positions[None] >= starts[:, None])
    answer = torch.where(answer.sum(1, keepdim=True) > 0, answer, mask)  # empty answer: use the whole text
    out = []
    for pooling in poolings:
        if pooling == "last":
            out.append(hidden[torch.arange(hidden.shape[0]), lengths - 1])
        else:
            weights = (mask if pooling == "mean" else answer).to(hidden.dtype)
            out.append((hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True))
    return torch.stack(out, 1)


@torch.inference_mode()
def _run_batch(model, layers_list, spec: FeatureSpec, ids: list[list[int]], starts: list[int], pad_id: int):
    """(B, n_layers, n_poolings, d) float32 for one batch of token id lists (right padded)."""
    device = next(model.parameters()).device
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    # layer l is the output of decoder block l-1; the blocks above the deepest wanted one never run.
    with capture({layer: layers_list[layer - 1] for layer in spec.layers}, stop_at=max(spec.layers)) as captured:
        model(input_ids=input_ids, attention_mask=mask, use_cache=False)
    starts_t = torch.tensor(starts, device=device)
    feats = [_pool(captured[layer].float(), mask, starts_t, spec.poolings) for layer in spec.layers]
    return torch.stack(feats, 1).cpu().numpy()


def extract(model, tokenizer, spec: FeatureSpec, pairs: list[tuple[str, str]], batch_size: int = 16,
            progress: bool = True) -> np.ndarray:
    """(n, n_layers, n_poolings, d) features of (context, answer) pairs, longest texts batched together."""
    layers_list = find_decoder_layers(model)
    if max(spec.layers) > len(layers_list):
        raise ValueError(f"layer {max(spec.layers)} asked for, but the feature model has {len(layers_list)}")
    encoded = [encode(tokenizer, spec, c, a) for c, a in pairs]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # sorting keeps padding small
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(pairs), len(spec.layers), len(spec.poolings), model.config.hidden_size), np.float32)
    steps = range(0, len(order), batch_size)
    for start in tqdm(steps, desc="judge features", disable=not progress or len(steps) < 2):
        idx = order[start : start + batch_size]
        ids, starts = zip(*(encoded[i] for i in idx))
        out[idx] = _run_batch(model, layers_list, spec, list(ids), list(starts), pad_id)
    return out


class FeatureCache:
    """Features keyed by text, in shards under one folder per (feature model, spec)."""

    def __init__(self, root: str | Path, identity: dict, spec: FeatureSpec) -> None:
        key = _sha(json.dumps({"identity": identity, "spec": asdict(spec)}, sort_keys=True))[:16]
        self.folder = Path(root).expanduser() / key
        self.index: dict[str, tuple[Path, int]] = {}
        for shard in sorted(self.folder.glob("shard_*.npz")):
            with np.load(shard) as data:
                for row, text_key in enumerate(data["keys"]):
                    self.index[str(text_key)] = (shard, row)

    @staticmethod
    def key(context: str, answer: str) -> str:
        return _sha(json.dumps([context, answer]))

    def get(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray | None, list[int]]:
        """Cached rows (missing rows zero) and the indices of the pairs not cached."""
        keys = [self.key(c, a) for c, a in pairs]
        missing = [i for i, k in enumerate(keys) if k not in self.index]
        found = [i for i, k in enumerate(keys) if k in self.index]
        if not found:
            return None, missing
        by_shard: dict[Path, list[int]] = {}
        for i in found:
            by_shard.setdefault(self.index[keys[i]][0], []).append(i)
        out = None
        for shard, rows in by_shard.items():
            with np.load(shard) as data:
                feats = data["features"]
                if out is None:
                    out = np.zeros((len(pairs), *feats.shape[1:]), np.float32)
                out[rows] = feats[[self.index[keys[i]][1] for i in rows]]
        return out, missing

    def put(self, pairs: list[tuple[str, str]], features: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = self.folder / f"shard_{len(list(self.folder.glob('shard_*.npz'))):05d}.npz"
        keys = np.array([self.key(c, a) for c, a in pairs])
        tmp = shard.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, features=features.astype(np.float16))  # half precision halves the cache
        tmp.replace(shard)
        for row, text_key in enumerate(keys):
            self.index[str(text_key)] = (shard, row)


def cached_extract(model, tokenizer, spec: FeatureSpec, pairs: list[tuple[str, str]], cache: FeatureCache | None,
                   batch_size: int = 16, chunk: int = 512) -> np.ndarray:
    """Like extract, but reads and fills the cache a chunk at a time (an interrupted run keeps its work);
    duplicate texts are computed once."""
    unique = list(dict.fromkeys(pairs))
    if cache is None:
        feats = extract(model, tokenizer, spec, unique, batch_size)
    else:
        feats, missing = cache.get(unique)
        log.info("judge features: %d cached, %d to compute", len(unique) - len(missing), len(missing))
        for start in range(0, len(missing), chunk):
            idx = missing[start : start + chunk]
            todo = [unique[i] for i in idx]
            new = extract(model, tokenizer, spec, todo, batch_size)
            cache.put(todo, new)
            if feats is None:
                feats = np.zeros((len(unique), *new.shape[1:]), np.float32)
            feats[idx] = new.astype(np.float16).astype(np.float32)  # as it will read back from the cache
    where = {pair: i for i, pair in enumerate(unique)}
    return feats[[where[p] for p in pairs]]
