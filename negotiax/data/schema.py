"""The one example record every dataset adapter produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    """One prompt (and for training, one target response) for one objective.

    Evaluation rows also carry what the metrics need: reference answers, correct / incorrect answers,
    labels and a category. `id` is stable across runs so generations can resume by id.
    """

    id: str
    objective: str  # helpful | harmless | honest (or any configured objective name)
    prompt: str
    response: str | None = None  # the training target
    reference: str | None = None  # a reference output (AlpacaEval) for pairwise judging
    correct_answers: list[str] = field(default_factory=list)  # TruthfulQA true references
    incorrect_answers: list[str] = field(default_factory=list)  # TruthfulQA false references
    label: Any = None  # e.g. is_safe for a labelled response, or MC targets
    category: str | None = None  # harm category / TruthfulQA category / AlpacaEval dataset
    source: str | None = None  # the file or hub id this came from
    meta: dict[str, Any] = field(default_factory=dict)
