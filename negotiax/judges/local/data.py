"""Labelled data for the local judges: PKU-SafeRLHF and BeaverTails for safety, TruthfulQA's judge files.

Every loader returns rows {context, answer, label, group, source} (label 1 = unsafe / true / informative;
group = the normalised prompt or question, so splits never put one group on both sides). A judge never trains
on a prompt or question it grades, nor on one the policy trains on by default (DESIGN.md §5, "Local judges").
The safety judge trains on files the policy never trains on by default (SAFETY_TRAIN_FILES), and drops every
row whose prompt occurs in a policy training file (derived from DEFAULT_TRAIN) or a harmless test set.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ...data.config import DEFAULT_TRAIN
from ...data.records import normalize_prompt, read_rows
from ...data.safety import load_beavertails, load_beavertails_eval
from ...data.sources import parse_source_rows
from ...data.truthfulqa import load_truthfulqa, split_questions
from ...io import read_jsonl

PKU = "beavertails/pku_saferlhf"
# The safety judge's own data: the raw PKU-SafeRLHF sample (two labelled responses per prompt) and the 140
# unsafe BeaverTails 30k_train pairs. Neither is a default training file of the policy; the PKU preference
# files (realign DPO 5k, 1000 safe/unsafe pairs) are, since issue 11, so they only block prompts here.
SAFETY_TRAIN_FILES = (
    f"{PKU}/PKU-Alignment_PKU-SafeRLHF_sample500.jsonl",
    "beavertails/beavertails_30k_train_unsafe_sample140.csv",  # every row unsafe (no is_safe column)
)
SAFETY_TEST_FILE = "beavertails/beavertails_30k_test.jsonl"
TRUTHFULQA_CSV = "truthfulqa/TruthfulQA.csv"
# Every file the policy trains on by default (each `path` of every objective's DEFAULT_TRAIN sources, read
# whole: all rows, whatever its filters, `part` or `limit`), so this list follows the defaults and cannot drift.
POLICY_TRAIN_FILES = tuple(dict.fromkeys(s["path"] for sources in DEFAULT_TRAIN.values() for s in sources
                                         if s.get("path")))
_POLICY_FORMATS = {s["path"]: s.get("format", "auto") for sources in DEFAULT_TRAIN.values() for s in sources
                   if s.get("path")}
# Files whose prompts the safety judge never trains on: the policy's default training files and the harmless
# test sets. A training row whose normalised prompt occurs in any of them is dropped.
SAFETY_BLOCKED_FILES = (*POLICY_TRAIN_FILES, SAFETY_TEST_FILE, "beavertails/BeaverTails-Evaluation.csv")
TRUTH_FILES = {"truth": "truthfulqa/finetune_truth.jsonl", "info": "truthfulqa/finetune_info.jsonl"}
_QA = re.compile(r"Q: (.*?)\nA: ?(.*)\n(?:True|Helpful):$", re.S)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; point --data-dir / NEGOTIAX_DATA_DIR at the shared data folder")
    return path


def _row(prompt: str, response: str, unsafe: bool, source: str) -> dict:
    return {"context": prompt, "answer": response, "label": int(unsafe), "group": normalize_prompt(prompt),
            "source": source}


def load_safety_train(data_dir: Path) -> tuple[list[dict], dict]:
    """Labelled safety judge rows (label 1 = unsafe), one per distinct (prompt, response): both responses of
    the raw PKU-SafeRLHF sample, and the BeaverTails 30k_train pairs, all unsafe."""
    sample, beavertails = (_need(Path(data_dir) / f) for f in SAFETY_TRAIN_FILES)
    rows = []
    for r in read_jsonl(sample):
        for i in (0, 1):
            rows.append(_row(r["prompt"], r[f"response_{i}"], not r[f"is_response_{i}_safe"], sample.name))
    for ex in load_beavertails(beavertails):
        # The file has no is_safe column: every row is an unsafe 30k_train pair (SOURCES.md); a row labelled
        # safe by a future version of the file keeps its label.
        rows.append(_row(ex.prompt, ex.response, ex.label is not True, beavertails.name))
    return _dedupe(rows)


def blocked_safety_prompts(data_dir: Path) -> dict[str, set[str]]:
    """Normalised prompts of every file in SAFETY_BLOCKED_FILES, read whole by the project's own loaders
    (a policy file with the format its DEFAULT_TRAIN source names; TruthfulQA: all 817 questions)."""
    data_dir = Path(data_dir)
    out = {}
    for name in SAFETY_BLOCKED_FILES:
        path = _need(data_dir / name)
        if name == SAFETY_TEST_FILE:
            out[name] = {r["group"] for r in load_safety_test(data_dir)}
            continue
        if name.endswith("BeaverTails-Evaluation.csv"):
            examples = load_beavertails_eval(path)
        else:
            examples = parse_source_rows(read_rows(path), _POLICY_FORMATS[name], str(path), "blocked", False, None)
        out[name] = {normalize_prompt(ex.prompt) for ex in examples}
    return out


def truthfulqa_halves(data_dir: Path) -> dict[str, set[str]]:
    """Normalised questions of the H3Fusion halves of TruthfulQA.csv: 'train' (408) and 'test' (409)."""
    questions = load_truthfulqa(_need(Path(data_dir) / TRUTHFULQA_CSV))
    return {part: {normalize_prompt(q.prompt) for q in split_questions(questions, part)} for part in ("train", "test")}


def text_hash(text: str) -> str:
    """Short sha256 of a normalised prompt or question: what a card lists of the texts a judge trained on."""
    return hashlib.sha256(normalize_prompt(text).encode()).hexdigest()[:16]


def load_safety_test(data_dir: Path) -> list[dict]:
    """BeaverTails 30k_test (3,021 rows) with its 14 harm categories."""
    path = _need(Path(data_dir) / SAFETY_TEST_FILE)
    rows = []
    for n, r in enumerate(read_jsonl(path)):
        row = _row(r["prompt"], r["response"], not r["is_safe"], path.name)
        row["category"] = r["category"]
        row["index"] = n
        rows.append(row)
    return rows


def parse_qa(prompt: str, where: str) -> tuple[str, str]:
    match = _QA.match(prompt)
    if not match:
        raise ValueError(f"{where}: prompt is not 'Q: ...\\nA: ...\\nTrue:' / 'Helpful:' ({prompt[:60]!r})")
    return match.group(1), match.group(2)


def load_truthfulqa_judge(data_dir: Path, kind: str) -> tuple[list[dict], dict]:
    """TruthfulQA's GPT-judge training file for `kind` (truth|info), one row per distinct (question, answer)."""
    path = _need(Path(data_dir) / TRUTH_FILES[kind])
    rows = []
    for n, r in enumerate(read_jsonl(path), 1):
        question, answer = parse_qa(r["prompt"], f"{path}:{n}")
        label = r["completion"].strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"{path}:{n}: completion {r['completion']!r} is neither ' yes' nor ' no'")
        rows.append({"context": question, "answer": answer, "label": int(label == "yes"),
                     "group": normalize_prompt(question), "source": path.name})
    return _dedupe(rows)


def _dedupe(rows: list[dict]) -> tuple[list[dict], dict]:
    """One row per (context, answer); texts labelled both ways are dropped and counted."""
    labels: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        labels.setdefault((r["context"], r["answer"]), set()).add(r["label"])
    seen, out = set(), []
    for r in rows:
        key = (r["context"], r["answer"])
        if len(labels[key]) == 1 and key not in seen:
            seen.add(key)
            out.append(r)
    conflicting = sum(len(v) > 1 for v in labels.values())
    return out, {"rows_read": len(rows), "distinct_texts": len(labels), "conflicting_labels_dropped": conflicting}


def split_groups(rows: list[dict], fractions: tuple[float, ...], seed: int = 0) -> list[list[dict]]:
    """Split rows by group (prompt or question) into parts of about the given fractions of groups."""
    groups = sorted({r["group"] for r in rows})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    bounds = np.cumsum([0, *fractions])
    bounds = (bounds / bounds[-1] * len(groups)).round().astype(int)
    part_of = {g: p for p in range(len(fractions)) for g in groups[bounds[p] : bounds[p + 1]]}
    parts: list[list[dict]] = [[] for _ in fractions]
    for r in rows:
        parts[part_of[r["group"]]].append(r)
    return parts


def subsample(rows: list[dict], n: int | None, seed: int = 0) -> list[dict]:
    """At most n rows in their original order, chosen by a seeded hash of the text: two label files over
    the same texts (truth and info) keep the same texts, so their features are computed once."""
    if n is None or len(rows) <= n:
        return rows

    def rank(r: dict) -> str:
        return hashlib.sha256(f"{seed}\0{r['context']}\0{r['answer']}".encode()).hexdigest()

    keep = set(sorted(range(len(rows)), key=lambda i: rank(rows[i]))[:n])
    return [r for i, r in enumerate(rows) if i in keep]
