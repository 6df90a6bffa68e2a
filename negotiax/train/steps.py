"""Adapt the data layer's MixtureSampler to the trainer's step source: collated tensors per objective."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

Batch = dict[str, torch.Tensor]


class CollatedSteps:
    """Iterates {objective: collated batch}; its state is the sampler's, for an exact resume."""

    def __init__(self, sampler: Any, collate: Callable[[list], Batch]) -> None:
        self.sampler = sampler
        self.collate = collate
        self._it: Iterator | None = None

    def __iter__(self) -> "CollatedSteps":
        return self

    def __next__(self) -> dict[str, Batch]:
        if self._it is None:  # created lazily, after any load_state_dict
            self._it = iter(self.sampler)
        step = next(self._it)
        return {objective: self.collate(items) for objective, items in step.items()}

    def state_dict(self) -> Any:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.sampler.load_state_dict(state)
        self._it = None


def fixed_batches(items: list, batch_size: int, collate: Callable[[list], Batch]) -> list[Batch]:
    """Collated batches in order, for held-out evaluation."""
    return [collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
