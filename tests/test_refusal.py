"""The refusal detector against tests/data/refusal_labelled.jsonl: real answers labelled by reading them.

Each row: prompt, answer (or, for answers taken from a dataset, ref: where to read them in the data directory),
source (model or circuit, prompt set and row, decoding), label (refusal | not), for a
refusal its form (explicit: the answer says it will not / cannot do it; soft: it only moralises or redirects),
split (dev: read while the rule was written; heldout: labelled after the final rule was frozen, scored once),
for hard cases a note, and for the 240 answers drawn from the experiments grid (seeded sample of the harmful and
benign test answers of every entry) `labelled`: they were labelled blind, by a reader who saw neither the rule
nor its outputs. The definition behind the labels is the one above negotiax.refusal.REFUSAL_PATTERNS.

Measured with the final rule (run with -s to see the matrices): over all 698 rows precision 0.952, recall 0.715
(0.938 on explicit refusals, 0.245 on soft ones); on the 300 held-out rows precision 0.933, recall 0.700; on the
240 blind-labelled grid answers precision 0.929, recall 0.774. Those 240 were read by a second reader too
(`second_reader`): the readers agree on 98.3% (Cohen's kappa 0.96), the detector with each on 90% / 89% (kappa
0.77 / 0.76), so issue 11's targets (0.95 each) are within a reader's reach but not the keyword rule's: soft
refusals carry no refusal phrase. The recall test is a strict xfail, so it fails loudly once met; the other
assertions are floors just under the measured values, so a regression fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from negotiax.refusal import refusal

DATA = Path(__file__).parent / "data" / "refusal_labelled.jsonl"


def resolve(rows: list[dict], data_dir: Path) -> None:
    """Fill in prompt and answer of the rows that point into the data directory (dataset answers are not copied
    into this repository): ref = {file (jsonl under the data dir), row (0-based), answer_field}."""
    files: dict[str, list[dict]] = {}
    for row in rows:
        ref = row.get("ref")
        if ref is None:
            continue
        if ref["file"] not in files:
            with (data_dir / ref["file"]).open() as f:
                files[ref["file"]] = [json.loads(line) for line in f]
        record = files[ref["file"]][ref["row"]]
        row["prompt"], row["answer"] = record["prompt"], record[ref["answer_field"]].strip()


@pytest.fixture(scope="module")
def rows(data_dir) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    resolve(rows, data_dir)
    for number, row in enumerate(rows, 1):
        assert {"prompt", "answer", "source", "label", "split"} <= set(row), f"{DATA} row {number}: missing fields"
        assert row["label"] in ("refusal", "not"), f"{DATA} row {number}: label must be refusal or not"
        assert row["split"] in ("dev", "heldout"), f"{DATA} row {number}: split must be dev or heldout"
        assert (row["label"] == "refusal") == (row.get("form") in ("explicit", "soft")), \
            f"{DATA} row {number}: a refusal needs form explicit or soft, and only a refusal has one"
    return rows


def confusion(rows: list[dict]) -> dict[str, int]:
    out = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for row in rows:
        said, truth = refusal(row["answer"]), row["label"] == "refusal"
        out[("t" if said == truth else "f") + ("p" if said else "n")] += 1
    return out


def scores(c: dict[str, int]) -> tuple[float, float]:
    return c["tp"] / max(c["tp"] + c["fp"], 1), c["tp"] / max(c["tp"] + c["fn"], 1)


def report(name: str, rows: list[dict]) -> tuple[float, float]:
    c = confusion(rows)
    precision, recall = scores(c)
    print(f"\n{name}: {len(rows)} answers\n"
          f"                 labelled refusal   labelled not\n"
          f"  detected       {c['tp']:16d}   {c['fp']:12d}\n"
          f"  not detected   {c['fn']:16d}   {c['tn']:12d}\n"
          f"  precision {precision:.3f}  recall {recall:.3f}")
    return precision, recall


def _source(row: dict) -> str:
    src = row["source"]
    if src.startswith("experiments grid"):
        return "experiments grid (labelled blind)"
    return src.split(" (")[0] if src.startswith(("hand-written", "Alpaca-7B")) else src.split(";")[0]


def test_labelled_set_is_large_and_varied(rows):
    real = [r for r in rows if not r["source"].startswith("hand-written")]
    assert len(real) >= 300
    assert any(r["source"].startswith("smollm2 base") for r in real)
    assert any("circuit" in r["source"] for r in real)
    assert any("BeaverTails" in r["source"] for r in real) and any("AlpacaEval" in r["source"] for r in real)
    labels = [r["label"] for r in real]
    assert labels.count("refusal") >= 50 and labels.count("not") >= 250


def test_refusal_detector_confusion_matrix(rows):
    """Prints every view of the confusion matrix; asserts what the rule achieves (so a regression fails)."""
    for split in ("dev", "heldout"):
        report(f"split {split}", [r for r in rows if r["split"] == split])
    for source in sorted({_source(r) for r in rows}):
        report(f"source {source}", [r for r in rows if _source(r) == source])
    precision, recall = report("all rows", rows)
    explicit = [r for r in rows if r.get("form") == "explicit"]
    soft = [r for r in rows if r.get("form") == "soft"]
    explicit_recall = sum(map(refusal, (r["answer"] for r in explicit))) / len(explicit)
    soft_recall = sum(map(refusal, (r["answer"] for r in soft))) / len(soft)
    print(f"\nrecall on explicit refusals {explicit_recall:.3f} ({len(explicit)}), on soft ones {soft_recall:.3f} "
          f"({len(soft)})")
    for r in rows:
        if refusal(r["answer"]) != (r["label"] == "refusal"):
            print(f"  wrong ({r['label']}, {r.get('form', '-')}, {r['split']}): {r['answer'][:100]!r}")
    assert precision >= 0.95
    assert scores(confusion([r for r in rows if r["split"] == "heldout"]))[0] >= 0.93  # measured 0.933
    assert explicit_recall >= 0.93 and recall >= 0.7  # floors just under the measured 0.938 and 0.715
    hand = [r for r in rows if r["source"].startswith("hand-written")]
    assert all(refusal(r["answer"]) == (r["label"] == "refusal") for r in hand)  # issue 11's cases, every one


def kappa(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """Raw agreement and Cohen's kappa of two yes/no labellings."""
    n = len(a)
    agree = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return agree, (agree - chance) / (1 - chance)


def test_second_reader(rows):
    """The blind-labelled grid answers were labelled twice, independently. The two readers agree far more than
    the detector agrees with either: the 0.95 targets are within a reader's reach, not the keyword rule's."""
    both = [r for r in rows if "second_reader" in r]
    first = [r["label"] == "refusal" for r in both]
    second = [r["second_reader"] == "refusal" for r in both]
    said = [refusal(r["answer"]) for r in both]
    readers, detector_first, detector_second = kappa(first, second), kappa(said, first), kappa(said, second)
    c = confusion([{**r, "label": r["second_reader"]} for r in both])
    print(f"\n{len(both)} answers read twice: readers agree {readers[0]:.3f} (kappa {readers[1]:.2f}); the detector "
          f"agrees with reader 1 {detector_first[0]:.3f} (kappa {detector_first[1]:.2f}), with reader 2 "
          f"{detector_second[0]:.3f} (kappa {detector_second[1]:.2f}); against reader 2: precision "
          f"{scores(c)[0]:.3f}, recall {scores(c)[1]:.3f}")
    assert len(both) == 240
    assert scores(c)[0] >= 0.94 and scores(c)[1] >= 0.74  # measured 0.943 and 0.750 against the second reader
    assert readers[1] > detector_first[1] and readers[1] > detector_second[1]


@pytest.mark.xfail(strict=True, reason="issue 11 asks recall >= 0.95; the keyword rule reaches 0.715 (0.938 "
                                       "on explicit refusals): soft refusals (moralising, redirecting) have no refusal phrase")
def test_recall_target_of_issue_11(rows):
    assert scores(confusion(rows))[1] >= 0.95
