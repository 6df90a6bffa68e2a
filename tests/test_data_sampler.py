"""MixtureSampler: one batch per objective per step, with replacement, deterministic and resumable."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from negotiax.data import DataConfig, MixtureSampler


def _sets():
    return {"helpful": list(range(1000)), "harmless": list(range(1000, 1020)), "honest": list(range(2000, 2300))}


def test_one_batch_per_objective_with_replacement():
    sampler = MixtureSampler(_sets(), batch_size=8, seed=1)
    seen = Counter()
    for _ in range(200):
        step = next(sampler)
        assert set(step) == {"helpful", "harmless", "honest"}
        assert all(len(batch) == 8 for batch in step.values())
        seen.update(step["harmless"])
    # The 20-example set is revisited (not a reason to stop) and every example is drawn.
    assert set(seen) == set(range(1000, 1020)) and sum(seen.values()) == 1600
    # Uniform within the dataset: each of 20 examples about 80 times.
    assert min(seen.values()) > 40 and max(seen.values()) < 130


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = [next(MixtureSampler(_sets(), 4, seed=3)) for _ in range(1)]
    s1, s2, s3 = MixtureSampler(_sets(), 4, seed=3), MixtureSampler(_sets(), 4, seed=3), MixtureSampler(_sets(), 4, seed=4)
    run1 = [next(s1) for _ in range(20)]
    assert run1 == [next(s2) for _ in range(20)]
    assert run1 != [next(s3) for _ in range(20)]
    assert a[0] == run1[0]


def test_resume_continues_exactly():
    full = MixtureSampler(_sets(), 4, seed=7)
    expected = [next(full) for _ in range(30)]
    first = MixtureSampler(_sets(), 4, seed=7)
    for _ in range(12):
        next(first)
    state = first.state_dict()
    resumed = MixtureSampler(_sets(), 4, seed=0)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(18)] == expected[12:]
    smaller = {k: v[:10] for k, v in _sets().items()}
    with pytest.raises(ValueError, match="same data"):
        MixtureSampler(smaller, 4).load_state_dict(state)


def test_weights_set_the_proportions():
    sampler = MixtureSampler(_sets(), batch_size=8, weights={"helpful": 2, "harmless": 1, "honest": 1}, seed=0)
    step = next(sampler)
    sizes = {k: len(v) for k, v in step.items()}
    assert sizes == {"helpful": 12, "harmless": 6, "honest": 6}  # same 24 examples per step, 2:1:1
    counts = Counter()
    for _ in range(50):
        for name, batch in next(sampler).items():
            counts[name] += len(batch)
    assert counts["helpful"] / counts["harmless"] == pytest.approx(2.0)
    zero = MixtureSampler(_sets(), 8, weights={"helpful": 1, "harmless": 1, "honest": 0})
    assert set(next(zero)) == {"helpful", "harmless"}


def test_bad_sampler_input():
    with pytest.raises(ValueError, match="empty dataset"):
        MixtureSampler({"a": [1], "b": []}, 2)
    with pytest.raises(ValueError, match="unknown objective"):
        MixtureSampler({"a": [1]}, 2, weights={"zzz": 1})
    with pytest.raises(ValueError, match="non-negative"):
        MixtureSampler({"a": [1]}, 2, weights={"a": -1})
    with pytest.raises(ValueError, match="mixture_weights"):
        DataConfig(mixture_weights={"nope": 1.0})


def test_ranks_take_disjoint_slices_of_one_global_draw():
    sets = _sets()
    ranks = [MixtureSampler(sets, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    single = MixtureSampler(sets, 6, seed=5)
    for step in range(4):
        parts = [next(s) for s in ranks]
        whole = next(single)
        for k, name in enumerate(sets):
            # the reference draw, computed here: 2 x 3 indices from the stream seeded by (seed, step, objective)
            drawn = np.random.default_rng([5, step, k]).integers(0, len(sets[name]), 6)
            assert parts[0][name] == [sets[name][i] for i in drawn[:3]]
            assert parts[1][name] == [sets[name][i] for i in drawn[3:]]
            assert parts[0][name] + parts[1][name] == whole[name]  # 2 processes x b == 1 process x 2b
    state = ranks[1].state_dict()
    resumed = MixtureSampler(sets, 3, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert next(resumed) == next(ranks[1])
    with pytest.raises(ValueError, match="same number of processes"):
        MixtureSampler(sets, 3, rank=0, world_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="rank=2"):
        MixtureSampler(sets, 3, rank=2, world_size=2)
