"""Mixture sampler: one batch per objective per step, drawn with replacement, resumable exactly.

Under several processes (DDP, FSDP), step t draws one global batch per objective of world_size x the
per-process size from a stream seeded by (seed, t, objective), and rank r takes the r-th slice. So every
rank trains on its own examples, and world_size processes with batch b draw exactly the examples that one
process with batch world_size x b would draw (and the mean of their gradients is that process's gradient
when the loss is a mean over equally sized parts).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def batch_sizes(names: list[str], batch_size: int, weights: dict | None) -> dict[str, int]:
    """Per-objective batch sizes: equal without weights; else proportional, same total, weight 0 = none."""
    if weights is None:
        return {n: batch_size for n in names}
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"mixture weights for unknown objective(s) {sorted(unknown)}; datasets: {names}")
    w = np.array([float(weights.get(n, 0.0)) for n in names])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mixture weights {weights}: non-negative, at least one positive")
    raw = w / w.sum() * batch_size * len(names)
    sizes = np.floor(raw).astype(int)
    # Hand the rounding remainder to the largest fractional parts so the total stays batch_size * N.
    for i in np.argsort(-(raw - sizes))[: batch_size * len(names) - sizes.sum()]:
        sizes[i] += 1
    sizes = np.where((w > 0) & (sizes == 0), 1, sizes)
    return {n: int(s) for n, s in zip(names, sizes) if s > 0}


class MixtureSampler:
    """Yields {objective: [examples]} each step; step t's batch depends only on (seed, t, rank), so resuming
    from state_dict() continues exactly where the run stopped.

    `batch_size` is per process; `rank` / `world_size` shard each step's global draw (see the module doc)."""

    def __init__(self, datasets: dict[str, Sequence], batch_size: int, weights: dict | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if not datasets:
            raise ValueError("MixtureSampler: no datasets")
        empty = [n for n, d in datasets.items() if len(d) == 0]
        if empty:
            raise ValueError(f"MixtureSampler: empty dataset(s) {empty}")
        if batch_size < 1:
            raise ValueError(f"MixtureSampler: batch_size={batch_size}; must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"MixtureSampler: rank={rank} with world_size={world_size}; need 0 <= rank < world_size")
        self.datasets = dict(datasets)
        self.names = list(datasets)
        self.sizes = batch_sizes(self.names, batch_size, weights)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.step = 0

    def indices(self, step: int) -> dict[str, list[int]]:
        """This rank's dataset indices at `step` (uniform, with replacement): its slice of the global draw."""
        out = {}
        for k, name in enumerate(self.names):
            if name in self.sizes:
                rng = np.random.default_rng([self.seed, step, k])
                size = self.sizes[name]
                drawn = rng.integers(0, len(self.datasets[name]), size * self.world_size)
                out[name] = drawn[self.rank * size:(self.rank + 1) * size].tolist()
        return out

    def __iter__(self) -> Iterator[dict[str, list]]:
        return self

    def __next__(self) -> dict[str, list]:
        drawn = self.indices(self.step)
        self.step += 1
        return {name: [self.datasets[name][i] for i in idx] for name, idx in drawn.items()}

    def state_dict(self) -> dict:
        """The same on every rank (all ranks step together), so the main process's copy resumes them all."""
        return {"seed": self.seed, "step": self.step, "sizes": dict(self.sizes), "world_size": self.world_size,
                "lengths": {n: len(d) for n, d in self.datasets.items()}}

    def load_state_dict(self, state: dict) -> None:
        lengths = {n: len(d) for n, d in self.datasets.items()}
        if state.get("lengths", lengths) != lengths or state.get("sizes", self.sizes) != self.sizes:
            raise ValueError(f"MixtureSampler.load_state_dict: the saved sampler had datasets "
                             f"{state.get('lengths')} and batch sizes {state.get('sizes')}, this one has "
                             f"{lengths} and {self.sizes}; resume with the same data and config")
        if state.get("world_size", 1) != self.world_size:
            raise ValueError(f"MixtureSampler.load_state_dict: the run was trained on {state.get('world_size', 1)} "
                             f"processes, this one has {self.world_size}; resume with the same number of processes "
                             "(the global batch and the draws depend on it)")
        self.seed, self.step = int(state["seed"]), int(state["step"])
