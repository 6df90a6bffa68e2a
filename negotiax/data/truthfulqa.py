"""TruthfulQA: the original CSV and the Hugging Face `truthful_qa` layouts, and the H3Fusion split.

One Example per question: prompt = question, correct / incorrect answers, category, and MC targets in
`label` = {"mc1": {"choices", "labels"}, "mc2": {...}}. MC1 = best answer vs the incorrect answers,
MC2 = every correct answer vs the incorrect answers; choices end with a period as in the original code's
`format_best` / `split_multi_answer`, so the CSV and the HF multiple_choice layout give the same targets.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .records import RowError, parse_rows, read_rows, require_columns, row_id, text, text_list
from .schema import Example

CSV_COLUMNS = ["Question", "Best Answer", "Correct Answers", "Incorrect Answers"]


def close(answer: str) -> str:
    return answer if answer.endswith((".", "?", "!")) else answer + "."


def mc_targets(best: str, correct: list[str], incorrect: list[str]) -> dict:
    wrong = [close(a) for a in incorrect]
    return {"mc1": {"choices": [close(best)] + wrong, "labels": [1] + [0] * len(wrong)},
            "mc2": {"choices": [close(a) for a in correct] + wrong,
                    "labels": [1] * len(correct) + [0] * len(wrong)}}


def _question(prefix, number, objective, source, question, best, correct, incorrect, category, kind):
    if best not in correct:  # the best answer is a correct answer by definition
        correct = [best] + correct
    return Example(id=row_id(prefix, number), objective=objective, prompt=question,
                   correct_answers=correct, incorrect_answers=incorrect,
                   label=mc_targets(best, correct, incorrect), category=category, source=source,
                   meta={"best_answer": best, "type": kind})


def csv_row(prefix: str, objective: str, source: str):
    """The original 7-column CSV (answer lists separated by '; ')."""

    def parse(row: dict, number: int) -> list[Example]:
        return [_question(prefix, number, objective, source, text(row, "Question"), text(row, "Best Answer"),
                          text_list(row, "Correct Answers"), text_list(row, "Incorrect Answers"),
                          row.get("Category") or None, row.get("Type") or None)]

    return parse


def generation_row(prefix: str, objective: str, source: str):
    """HF `truthful_qa` generation: question, best_answer, correct_answers, incorrect_answers (lists)."""

    def parse(row: dict, number: int) -> list[Example]:
        return [_question(prefix, number, objective, source, text(row, "question"), text(row, "best_answer"),
                          text_list(row, "correct_answers"), text_list(row, "incorrect_answers"),
                          row.get("category") or None, row.get("type") or None)]

    return parse


def _targets(row: dict, key: str) -> dict:
    value = row.get(key)
    if not isinstance(value, dict) or not {"choices", "labels"} <= set(value):
        raise RowError(f"field {key!r} should be {{'choices': [...], 'labels': [...]}}, got {value!r:.60}")
    choices, labels = value["choices"], value["labels"]
    if (not isinstance(choices, list) or not isinstance(labels, list) or len(choices) != len(labels)
            or not all(isinstance(c, str) for c in choices) or any(lab not in (0, 1) for lab in labels)):
        raise RowError(f"field {key!r}: choices must be strings and labels 0/1, one label per choice")
    if 1 not in labels or 0 not in labels:
        raise RowError(f"field {key!r} needs at least one true and one false choice")
    return {"choices": [c.strip() for c in choices], "labels": list(labels)}


def multiple_choice_row(prefix: str, objective: str, source: str):
    """HF `truthful_qa` multiple_choice: question, mc1_targets, mc2_targets."""

    def parse(row: dict, number: int) -> list[Example]:
        mc1, mc2 = _targets(row, "mc1_targets"), _targets(row, "mc2_targets")
        correct = [c for c, lab in zip(mc2["choices"], mc2["labels"]) if lab]
        incorrect = [c for c, lab in zip(mc2["choices"], mc2["labels"]) if not lab]
        best = mc1["choices"][mc1["labels"].index(1)]
        return [Example(id=row_id(prefix, number), objective=objective, prompt=text(row, "question"),
                        correct_answers=correct, incorrect_answers=incorrect,
                        label={"mc1": mc1, "mc2": mc2}, source=source,
                        meta={"best_answer": best, "type": None})]

    return parse


def load_truthfulqa(path: str | Path, objective: str = "honest", skip_bad_rows: bool = False,
                    stats: dict | None = None) -> list[Example]:
    """All questions of the original TruthfulQA CSV (or a JSON/JSONL file in the HF generation layout)."""
    path = Path(path)
    rows = read_rows(path)
    if path.suffix.lower() == ".csv":
        require_columns(rows, CSV_COLUMNS, str(path))
        parser = csv_row
    else:
        parser = generation_row
    return parse_rows(rows, str(path), parser("truthfulqa", objective, str(path)), skip_bad_rows, stats)


def split_questions(questions: list[Example], part: str) -> list[Example]:
    """The H3Fusion split, in file order: first half (408 of 817) 'train', the rest (409) 'test'."""
    half = len(questions) // 2
    if part == "train":
        return questions[:half]
    if part == "test":
        return questions[half:]
    if part == "all":
        return questions
    raise ValueError(f"TruthfulQA part {part!r}: expected 'train', 'test' or 'all'")


def answer_examples(questions: list[Example]) -> list[Example]:
    """Training examples: one per correct answer of each question."""
    out = []
    for q in questions:
        for k, answer in enumerate(q.correct_answers):
            out.append(dataclasses.replace(q, id=f"{q.id}-a{k}", response=answer, label=None,
                                           meta=dict(q.meta)))
    return out
