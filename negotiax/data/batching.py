"""Tokenise once per run (TokenizedDataset) and pad per batch (Collator)."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .formatting import IGNORE, encode_examples, resolve_template
from .schema import Example

log = logging.getLogger(__name__)
CHUNK = 256  # examples per batched tokenizer call


class TokenizedDataset(Sequence):
    """Examples tokenised up front; items are {"input_ids", "labels"}; `stats` counts cut examples."""

    def __init__(self, examples: Sequence[Example], tokenizer, max_length: int = 512, template: str = "auto",
                 name: str = "", progress: bool = True, objectives: Sequence[str] | None = None):
        if not examples:
            raise ValueError(f"TokenizedDataset {name}: no examples to tokenise")
        template = resolve_template(tokenizer, template)
        self.examples = list(examples)
        self.features: list[dict] = []
        cuts = {"examples": 0, "prompt": 0, "response": 0}
        chunks = range(0, len(self.examples), CHUNK)
        for start in tqdm(chunks, desc=f"tokenising {name}".strip(), disable=not progress, leave=False):
            for enc in encode_examples(tokenizer, self.examples[start:start + CHUNK], max_length, template):
                cuts["examples"] += enc.cut_prompt or enc.cut_response
                cuts["prompt"] += enc.cut_prompt
                cuts["response"] += enc.cut_response
                self.features.append({"input_ids": enc.input_ids, "labels": enc.labels})
        for feature, ex in zip(self.features, self.examples):
            feature["ce"] = 0 if ex.meta.get("route_only") else 1  # route-only rows: routing loss alone
            if ex.meta.get("route"):  # a source's `route`: the routing loss sends this row to that objective
                if objectives is None or ex.meta["route"] not in objectives:
                    raise ValueError(f"TokenizedDataset {name}: example {ex.id} is routed to {ex.meta['route']!r}, "
                                     f"which is not one of the objectives {list(objectives or [])}")
                feature["route"] = list(objectives).index(ex.meta["route"])
        n_tokens = sum(len(f["input_ids"]) for f in self.features)
        self.stats = {"examples": len(self.features), "tokens": n_tokens, "max_length": max_length,
                      "template": template, "cut_examples": cuts["examples"],
                      "cut_prompt_start": cuts["prompt"], "cut_response_end": cuts["response"]}
        if cuts["examples"]:
            log.warning("%s: %d of %d examples are longer than max_length=%d and were cut: %d lost the "
                        "prompt's start, %d the response's end", name or "dataset", cuts["examples"],
                        len(self.features), max_length, cuts["prompt"], cuts["response"])

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index):
        return self.features[index]


def tokenize_sets(sets: dict[str, Sequence[Example]], tokenizer, max_length: int = 512,
                  template: str = "auto", progress: bool = True) -> dict[str, TokenizedDataset]:
    """One TokenizedDataset per objective (do this once per run, then sample from it); a row's routing target
    is an index into the sets' objectives, in their order."""
    return {name: TokenizedDataset(exs, tokenizer, max_length, template, name, progress, objectives=list(sets))
            for name, exs in sets.items()}


class Collator:
    """Pads a list of {"input_ids", "labels"} to the batch's longest; labels are -100 on padding."""

    def __init__(self, tokenizer, padding_side: str = "right", pad_to_multiple_of: int | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; choose left or right")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad
        self.padding_side = padding_side
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Collator: empty batch")
        width = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            span = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ids[row, span] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[row, span] = torch.tensor(f["labels"], dtype=torch.long)
            mask[row, span] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if any("ce" in f for f in features):  # which rows' answers are learnt (0: routing supervision only)
            out["ce_rows"] = torch.tensor([int(f.get("ce", 1)) for f in features], dtype=torch.long)
        if any("route" in f for f in features):  # the routing target per row (-1: the batch's objective)
            out["route_rows"] = torch.tensor([int(f.get("route", -1)) for f in features], dtype=torch.long)
        return out
