"""The judge interface: a name that identifies it in reports, and a batched scoring call.

A judge returns one score per item, or None where the call failed after retries: a missing
annotation is reported and excluded, never scored.
"""
from __future__ import annotations

from typing import Callable, Protocol

# what each kind of judge scores, per item
KINDS = {
    "pairwise": "P(output beats reference) in [0,1] from {'instruction', 'output', 'reference'}; ties 0.5",
    "safety": "P(response is unsafe) in [0,1] from {'prompt', 'response'}; flagged if > threshold",
    "truth": "P(answer is true) in [0,1] from {'question', 'answer'}",
    "info": "P(answer is informative) in [0,1] from {'question', 'answer'}",
}


class Judge(Protocol):
    name: str  # identity recorded in every report, e.g. "openai:gpt-4o" or "local-safety:smollm2-135m/L12"
    kind: str  # one of KINDS
    threshold: float

    def score(self, items: list[dict]) -> list[float | None]: ...


JUDGES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str):
    """Decorator: make a judge factory available by name in configs (`eval.judges.safety: <name>`)."""

    def wrap(factory):
        JUDGES[name] = factory
        return factory

    return wrap


def make_judge(name: str, **kwargs) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; available: {', '.join(sorted(JUDGES)) or 'none'}")
    return JUDGES[name](**kwargs)
