"""BeaverTails QA pairs, BeaverTails-Evaluation prompts and PKU-SafeRLHF response files.

Every response keeps its safety label in `Example.label` (True = safe, False = unsafe, None = unknown), so
training can keep only safe responses and a judge can be scored against the labels.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .records import RowError, boolean, parse_rows, read_rows, require_columns, row_id, text
from .schema import Example


def categories(row: dict, key: str = "category") -> list[str]:
    """Harm categories flagged in a row: a dict of booleans, its Python-repr string, or a plain name."""
    value = row.get(key)
    if value is None:
        return []
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise RowError(f"field {key!r} looks like a dict but does not parse: {value!r:.80}") from None
    if isinstance(value, dict):
        bad = [k for k, v in value.items() if not isinstance(v, bool)]
        if bad:
            raise RowError(f"field {key!r}: values must be true/false, not for {bad[:3]}")
        return [k for k, v in value.items() if v]
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    raise RowError(f"field {key!r} should be a dict of booleans or a category name, "
                   f"got {type(value).__name__}")


def beavertails_row(prefix: str, objective: str, source: str):
    """{prompt, response?, category, is_safe?}: one example per row; is_safe becomes the label."""

    def parse(row: dict, number: int) -> list[Example]:
        cats = categories(row)
        label = boolean(row, "is_safe") if "is_safe" in row else None
        if label is True and cats:
            raise RowError(f"is_safe is true but harm categories {cats} are flagged")
        response = text(row, "response") if "response" in row else None
        return [Example(id=row_id(prefix, number), objective=objective, prompt=text(row, "prompt"),
                        response=response, label=label, category="; ".join(cats) or None,
                        source=source, meta={"categories": cats, "is_safe": label})]

    return parse


def beavertails_eval_row(prefix: str, objective: str, source: str):
    """BeaverTails-Evaluation {prompt, category, category_id}: a harmful prompt and its category."""

    def parse(row: dict, number: int) -> list[Example]:
        meta = {"category_id": row["category_id"]} if "category_id" in row else {}
        return [Example(id=row_id(prefix, number), objective=objective, prompt=text(row, "prompt"),
                        category=text(row, "category"), source=source, meta=meta)]

    return parse


def pku_raw_row(prefix: str, objective: str, source: str):
    """Raw PKU-SafeRLHF {prompt, response_0/1, is_response_0/1_safe, ...}: one example per response."""

    def parse(row: dict, number: int) -> list[Example]:
        prompt = text(row, "prompt")
        out = []
        for i in (0, 1):
            meta = {"harm_categories": categories(row, f"response_{i}_harm_category"),
                    "severity": row.get(f"response_{i}_severity_level"),
                    "better": row.get("better_response_id") == i, "safer": row.get("safer_response_id") == i}
            out.append(Example(id=row_id(prefix, number, i), objective=objective, prompt=prompt,
                               response=text(row, f"response_{i}"), label=boolean(row, f"is_response_{i}_safe"),
                               source=source, meta=meta))
        return out

    return parse


def pku_pairs_row(prefix: str, objective: str, source: str):
    """{prompt, response_safe, response_unsafe}: a safe (label True) and an unsafe (False) example."""

    def parse(row: dict, number: int) -> list[Example]:
        prompt = text(row, "prompt")
        return [Example(id=row_id(prefix, number, 0), objective=objective, prompt=prompt,
                        response=text(row, "response_safe"), label=True, source=source),
                Example(id=row_id(prefix, number, 1), objective=objective, prompt=prompt,
                        response=text(row, "response_unsafe"), label=False, source=source)]

    return parse


def pku_dpo_row(prefix: str, objective: str, source: str):
    """{prompt, response: [safer, less safe]} (realign DPO): response[0] is safe, response[1] unsafe."""

    def parse(row: dict, number: int) -> list[Example]:
        pair = row.get("response")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(r, str) for r in pair)):
            raise RowError(f"field 'response' should be a list of two strings [safer, less safe], "
                           f"got {type(pair).__name__}")
        prompt = text(row, "prompt")
        return [Example(id=row_id(prefix, number, i), objective=objective, prompt=prompt,
                        response=text({"response": r}, "response"), label=(i == 0), source=source)
                for i, r in enumerate(pair)]

    return parse


def _load(path, parser, columns, objective, skip_bad_rows, stats) -> list[Example]:
    path = Path(path)
    rows = read_rows(path)
    if path.suffix.lower() == ".csv":
        require_columns(rows, columns, str(path))
    return parse_rows(rows, str(path), parser(path.stem, objective, str(path)), skip_bad_rows, stats)


def load_beavertails(path: str | Path, objective: str = "harmless", skip_bad_rows: bool = False,
                     stats: dict | None = None, is_safe: bool | None = None) -> list[Example]:
    """BeaverTails QA pairs (CSV / JSONL / JSON), one example per row, labelled with is_safe.

    `is_safe=True` / `False` keeps only the rows with that label (an error if the file has no labels).
    """
    examples = _load(path, beavertails_row, ["prompt"], objective, skip_bad_rows, stats)
    if is_safe is None:
        return examples
    if any(ex.label is None for ex in examples):
        raise ValueError(f"{path}: is_safe={is_safe} filter, but some rows have no is_safe column; "
                         f"this file cannot be split by safety")
    kept = [ex for ex in examples if ex.label is is_safe]
    if not kept:
        raise ValueError(f"{path}: no rows with is_safe={is_safe}")
    return kept


def load_beavertails_eval(path: str | Path, objective: str = "harmless", skip_bad_rows: bool = False,
                          stats: dict | None = None) -> list[Example]:
    """BeaverTails-Evaluation prompts with their category (700 prompts, 14 categories)."""
    return _load(path, beavertails_eval_row, ["prompt", "category"], objective, skip_bad_rows, stats)


def load_pku_raw(path: str | Path, objective: str = "harmless", skip_bad_rows: bool = False,
                 stats: dict | None = None) -> list[Example]:
    """Raw PKU-SafeRLHF rows: two labelled responses per prompt."""
    return _load(path, pku_raw_row, ["prompt", "response_0", "response_1"], objective, skip_bad_rows, stats)


def load_pku_pairs(path: str | Path, objective: str = "harmless", skip_bad_rows: bool = False,
                   stats: dict | None = None) -> list[Example]:
    """{prompt, response_safe, response_unsafe} pairs."""
    return _load(path, pku_pairs_row, ["prompt", "response_safe", "response_unsafe"], objective,
                 skip_bad_rows, stats)


def load_pku_dpo(path: str | Path, objective: str = "harmless", skip_bad_rows: bool = False,
                 stats: dict | None = None) -> list[Example]:
    """{prompt, response: [safer, less safe]} DPO pairs."""
    return _load(path, pku_dpo_row, ["prompt", "response"], objective, skip_bad_rows, stats)
