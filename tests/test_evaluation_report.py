"""The report's headline: paired changes against base with intervals, verdicts, the refusal margin."""
import numpy as np
import pytest

from negotiax.evaluation.report import (change_rows, headline_metrics, margin, paired_change, seed_change, verdict,
                                       write_report)


def entry(values: dict, stat: str = "mean", scale: float = 100.0) -> dict:
    vals = list(values.values())
    mean = (np.mean([v[0] for v in vals]) * np.mean([v[1] for v in vals]) if stat == "product"
            else np.mean(vals)) * scale
    return {"value": float(mean), "ci_low": None, "ci_high": None, "n": len(vals),
            "items": {"scale": scale, "stat": stat, "values": values}}


def test_paired_change_matches_a_hand_computed_bootstrap():
    before = entry({"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0})
    after = entry({"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0, "extra": 1.0})  # "extra" has no pair: ignored
    ch = paired_change(before, after, n_boot=500, seed=3)
    assert ch["n"] == 4 and ch["value"] == pytest.approx(50.0)  # (3/4 - 1/4) * 100
    # The same resampling by hand: per-prompt differences (1, 0, 1, 0), resampled with the same generator.
    idx = np.random.default_rng(3).integers(0, 4, (500, 4))
    draws = np.array([1.0, 0.0, 1.0, 0.0])[idx].mean(-1) * 100
    assert ch["ci_low"] == pytest.approx(np.quantile(draws, 0.025))
    assert ch["ci_high"] == pytest.approx(np.quantile(draws, 0.975))


def test_paired_change_of_a_product_statistic():
    before = entry({"a": [1, 0], "b": [1, 1]}, stat="product")  # truthful 100%, informative 50% -> 50
    after = entry({"a": [1, 1], "b": [0, 1]}, stat="product")  # 50% x 100% -> 50
    assert paired_change(before, after)["value"] == pytest.approx(0.0)
    assert paired_change(before, {"value": 1.0}) is None  # no per-item values: no interval


def test_seed_change_resamples_the_runs():
    """Three training seeds that differ only by a constant (0, 30 and 60%; no prompt noise) against one run
    at 0: the change is -30, and the interval spans what resampling three seeds can give, by hand: the
    mean of three draws from {0, 30, 60} is 60 or 0 with probability 1/27 each (3.7% > 2.5%), so the 95%
    interval of the change is [-60, 0] exactly. Paired prompts alone (seed 0 against the run) would say 0."""
    ids = [f"q{i}" for i in range(10)]
    seeds = [entry({i: c for i in ids}) for c in (0.0, 0.3, 0.6)]
    other = [entry({i: 0.0 for i in ids})]
    ch = seed_change(seeds, other, n_boot=4000, seed=1)
    assert ch["value"] == pytest.approx(-30.0) and ch["runs"] == [3, 1] and ch["n"] == 10
    assert ch["ci_low"] == pytest.approx(-60.0) and ch["ci_high"] == pytest.approx(0.0)
    assert paired_change(seeds[0], other[0])["ci_low"] == paired_change(seeds[0], other[0])["ci_high"] == 0.0
    assert seed_change(seeds, [{"value": 1.0}]) is None and seed_change([], other) is None


def test_verdict_reads_the_interval_and_the_direction():
    up = {"value": 5.0, "ci_low": 1.0, "ci_high": 9.0}
    flat = {"value": 1.0, "ci_low": -2.0, "ci_high": 4.0}
    assert verdict(up, True) == "better" and verdict(up, False) == "worse"
    assert verdict(flat, True) == "no clear change" and verdict(None, True) == "–"


def test_headline_has_one_row_per_objective_and_one_decimal(tmp_path):
    ids = [f"q{i}" for i in range(10)]
    base = {"refusal_harmful": entry({i: float(k < 2) for k, i in enumerate(ids)}),
            "over_refusal_benign": entry({i: 0.0 for i in ids}),
            "MC2": entry({i: 0.3 for i in ids}), "SS/violence": entry({i: 0.0 for i in ids})}
    trained = {"refusal_harmful": entry({i: float(k < 9) for k, i in enumerate(ids)}),
               "over_refusal_benign": entry({i: float(k < 1) for k, i in enumerate(ids)}),
               "MC2": entry({i: 0.3 for i in ids}), "SS/violence": entry({i: 0.0 for i in ids})}
    systems = {"base": base, "negotiax": trained}
    assert headline_metrics(systems) == [("helpful", "over_refusal_benign", False),
                                         ("harmless", "refusal_harmful", True), ("honest", "MC2", True)]
    rows = change_rows(systems, headline_metrics(systems))
    harm = rows[1]
    assert harm[:5] == ["harmless", "refusal_harmful", "higher", "20.0", "90.0"]
    assert harm[5].startswith("+70.0 [") and harm[6] == "better"
    assert rows[2][6] == "no clear change"
    m = margin(systems)
    assert m["value"]["base"] == pytest.approx(20.0) and m["value"]["negotiax"] == pytest.approx(80.0)
    md, html = write_report(tmp_path, "t", systems)
    text = md.read_text()
    assert text.index("Did it work?") < text.index("SS/violence")  # categories below the headline
    assert "<details><summary>By category</summary>" in html.read_text()
