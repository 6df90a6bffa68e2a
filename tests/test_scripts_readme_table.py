"""scripts/readme_table.py: the README's results table comes from a run's summary.json, not from typing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("readme_table")


def metric(value, low, high, n, judge="offline"):
    return {"value": value, "ci_low": low, "ci_high": high, "n": n, "missing": 0, "judge": judge, "unit": "%"}


def write_run(tmp_path: Path, systems: dict, **extra) -> Path:
    run = tmp_path / "quick"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"metrics": systems, "negotiation": {}, "report": "r.md", **extra}))
    return run


def test_table_from_summary(script, tmp_path, capsys):
    systems = {
        "base": {"refusal_harmful": metric(27.0, 19.0, 36.04, 100), "MC2": metric(23.44, 20.0, 27.0, 80),
                 "SS": metric(20.0, 13.0, 28.0, 100, "local-safety:smollm2"), "SS/violence": metric(1.0, 0, 2, 9)},
        "negotiax": {"refusal_harmful": metric(14.0, 8.0, 21.0, 100), "MC2": metric(26.26, 22.0, 30.0, 80),
                     "SS": metric(15.0, 8.0, 22.0, 100, "local-safety:smollm2")},
        "sft-lora": {"refusal_harmful": metric(30.0, 21.0, 39.0, 100)},
    }
    run = write_run(tmp_path, systems, created="2026-11-30T21:00:00+00:00", git_revision="0123456789abcdef",
                    git_dirty=False)
    assert script.main(["--run", str(run)]) == 0
    assert capsys.readouterr().out == (
        "Run `quick` at commit 0123456789, 2026-11-30T21:00:00+00:00; values in %, [95% bootstrap interval].\n"
        "\n"
        "| metric | base | NegotiaX | sft-lora | NegotiaX − base (paired) | sft-lora − base (paired) |\n"
        "|---|---|---|---|---|---|\n"
        "| refusal on harmful prompts (keyword detector) (n=100) | 27.0 [19.0, 36.0] | 14.0 [8.0, 21.0] "
        "| 30.0 [21.0, 39.0] | – | – |\n"
        "| TruthfulQA MC2 (n=80) | 23.4 [20.0, 27.0] | 26.3 [22.0, 30.0] | – | – | – |\n"
        "| SS, safety judge (lower is better) (n=100; judge `local-safety:smollm2`) | 20.0 [13.0, 28.0] "
        "| 15.0 [8.0, 22.0] | – | – | – |\n")


def test_paired_change_routing_and_sweep_lines(script, tmp_path):
    base = {"refusal_harmful": {**metric(25.0, 10.0, 40.0, 4),
                                "items": {"scale": 100, "stat": "mean", "values": {"a": 0, "b": 0, "c": 0, "d": 1}}}}
    trained = {"refusal_harmful": {**metric(100.0, 100.0, 100.0, 4),
                                   "items": {"scale": 100, "stat": "mean", "values": {"a": 1, "b": 1, "c": 1, "d": 1}}}}
    run = write_run(tmp_path, {"base": base, "negotiax": trained})
    summary = json.loads((run / "summary.json").read_text())
    summary["negotiation"] = {"harmful": {"n": 4, "expected": "harmless", "routing_accuracy": 0.75}}
    summary["preference_sweep"] = [{"objective": "harmless", "beta": -4.0, "refusal_harmful": metric(5.0, 0.0, 10.0, 4)}]
    (run / "summary.json").write_text(json.dumps(summary))
    table = script.readme_table(run)
    # every prompt moves 0 -> 1 except d (already 1): +75 points, and every resample stays above 0 -> better
    assert "| +75.0 [+25.0, +100.0] better |" in table
    assert "harmful → harmless 75% (n=4)" in table and "β_harmless -4: 5.0 [0.0, 10.0] refusal" in table


def test_older_summary_falls_back_to_provenance_and_results(script, tmp_path):
    run = write_run(tmp_path, {"base": {"MC1": metric(10.0, None, None, 80)}})
    (run / "provenance.json").write_text(json.dumps({"git_revision": "fedcba9876543210", "git_dirty": True}))
    for system, created in (("base", "2026-11-30T20:00:00+00:00"), ("negotiax", "2026-11-30T20:05:00+00:00")):
        (run / "eval" / system).mkdir(parents=True)
        (run / "eval" / system / "results.json").write_text(json.dumps({"created": created}))
    table = script.readme_table(run)
    assert table.startswith("Run `quick` at commit fedcba9876 (with uncommitted changes), 2026-11-30T20:05:00+00:00;")
    assert "| TruthfulQA MC1 (n=80) | 10.0 |" in table  # no interval: the value alone


def test_missing_summary_is_a_clear_error(script, tmp_path, capsys):
    assert script.main(["--run", str(tmp_path / "nowhere")]) == 2
    assert "negotiax run" in capsys.readouterr().err


def test_extra_system_from_another_results_file(script, tmp_path, capsys):
    run = write_run(tmp_path, {"base": {"MC2": metric(20.0, 15.0, 25.0, 80)}})
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"metrics": {"MC2": metric(30.0, 25.0, 35.0, 80)}}))
    assert script.main(["--run", str(run), "--extra", f"sft-lora={other}"]) == 0
    out = capsys.readouterr().out
    assert "| metric | base | sft-lora | sft-lora − base (paired) |" in out and "| 30.0 [25.0, 35.0] |" in out
    assert script.main(["--run", str(run), "--extra", "no-equals-sign"]) == 2


def items(values: dict) -> dict:
    return {"scale": 100, "stat": "mean", "values": values}


def test_selectivity_and_training_lines(script, tmp_path):
    """Refusal minus over-refusal by hand: NegotiaX refuses 3 of 4 harmful and 1 of 4 benign prompts (+50 points),
    sft-lora 4 of 4 and 3 of 4 (+25); each system's training tokens/s comes from its train summary."""
    def system(harmful, benign):
        return {"refusal_harmful": {**metric(0, 0, 0, 4), "items": items(dict(zip("abcd", harmful)))},
                "over_refusal_benign": {**metric(0, 0, 0, 4), "items": items(dict(zip("efgh", benign)))}}
    run = write_run(tmp_path, {"base": system([0, 0, 0, 1], [0, 0, 0, 0]), "negotiax": system([1, 1, 0, 1], [1, 0, 0, 0])},
                    training={"negotiax": {"throughput": {"tokens_per_s": 280.6}}})
    entry = tmp_path / "ablate" / "sft-lora"
    (entry / "eval").mkdir(parents=True)
    (entry / "eval" / "results.json").write_text(json.dumps({"metrics": system([1, 1, 1, 1], [1, 1, 1, 0])}))
    (entry / "train_summary.json").write_text(json.dumps({"throughput": {"tokens_per_s": 167.8}}))
    table = script.readme_table(run, {"sft-lora": entry / "eval" / "results.json"})
    line = next(l for l in table.splitlines() if l.startswith("Refusal minus over-refusal"))
    assert "base +25.0 [" in line and "NegotiaX +50.0 [" in line and "sft-lora +25.0 [" in line
    assert "NegotiaX − sft-lora: +25.0 [" in line and "not clearly different (within noise)" in line  # n=4: wide
    assert "Training throughput on this machine (tokens/s, same batches): NegotiaX 281; sft-lora 168." in table
