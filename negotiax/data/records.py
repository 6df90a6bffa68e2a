"""Reading raw rows from JSON / JSONL / CSV files, with errors that name the file and row.

Rows are numbered from 1 in every message (a JSON list's first element, a JSONL file's first line, a CSV
file's first data row after the header).
"""
from __future__ import annotations

import csv
import json
import logging
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

from ..io import read_jsonl
from .schema import Example

log = logging.getLogger(__name__)
SKIP_HINT = "fix the row or set data.skip_bad_rows=true to skip bad rows"


class RowError(ValueError):
    """One row does not have what its format expects (the caller adds the file and row)."""


class BadRow:
    """A row that could not even be read (malformed JSONL line, non-object element)."""

    def __init__(self, why: str):
        self.why = why


def read_rows(path: str | Path) -> list[dict | BadRow]:
    """All rows of a .json (list of objects), .jsonl or .csv file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist; give an existing path, or set "
                                f"data.data_dir / NEGOTIAX_DATA_DIR to a directory laid out like ../shared/data")
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = _read_json(path)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".csv":
        rows = _read_csv(path)
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r}; expected .json (a list of objects), "
                         f".jsonl (one object per line) or .csv (with a header row)")
    if not rows:
        raise ValueError(f"{path}: the file has no rows; expected at least one example")
    return rows


def _read_json(path: Path) -> list[dict | BadRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg}); "
                         f"expected a JSON list of objects (or use .jsonl for one object per line)") from None
    if isinstance(data, dict):  # {"data": [...]} style exports: accept one list-valued key
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list of objects, got an object with keys "
                             f"{sorted(data)[:8]}")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [row if isinstance(row, dict) else BadRow(f"expected a JSON object, got {type(row).__name__}")
            for row in data]


def _read_jsonl(path: Path) -> list[dict | BadRow]:
    rows = read_jsonl(path, encoding="utf-8-sig",
                      bad_line=lambda _, err: BadRow(f"not valid JSON ({err.msg} at column {err.colno})"))
    return [row if isinstance(row, (dict, BadRow)) else BadRow(f"expected a JSON object, got {type(row).__name__}")
            for row in rows]


def _read_csv(path: Path) -> list[dict | BadRow]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty CSV file; expected a header row and data rows")
        rows: list[dict | BadRow] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                rows.append(BadRow(f"has {len(cells)} cells, the header has {len(header)} ({header})"))
            else:
                rows.append(dict(zip(header, cells)))
    return rows


def require_columns(rows: list[dict | BadRow], columns: Iterable[str], where: str) -> None:
    """A CSV / table whose header lacks a column is one error, not one per row."""
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        return
    missing = [c for c in columns if c not in first]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; the file has columns {list(first)}")


def text(row: dict, key: str, *, allow_empty: bool = False) -> str:
    """A string field, stripped; missing, non-string or empty values are row errors."""
    if key not in row:
        raise RowError(f"missing field {key!r} (the row has {sorted(row)})")
    value = row[key]
    if not isinstance(value, str):
        raise RowError(f"field {key!r} should be a string, got {type(value).__name__} {value!r:.60}")
    value = value.strip()
    if not value and not allow_empty:
        raise RowError(f"field {key!r} is empty")
    return value


def text_list(row: dict, key: str) -> list[str]:
    """A list of non-empty strings (JSON list) or a `; `-separated string (the TruthfulQA CSV)."""
    if key not in row:
        raise RowError(f"missing field {key!r} (the row has {sorted(row)})")
    value = row[key]
    if isinstance(value, str):
        items = [a.strip() for a in value.split(";")]
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        items = [a.strip() for a in value]
    else:
        raise RowError(f"field {key!r} should be a list of strings or a '; '-separated string, "
                       f"got {type(value).__name__}")
    items = [a for a in items if a]
    if not items:
        raise RowError(f"field {key!r} has no answers")
    return items


def boolean(row: dict, key: str) -> bool:
    """A bool field; CSV strings 'True'/'False' (any case) are accepted, anything else is an error."""
    if key not in row:
        raise RowError(f"missing field {key!r} (the row has {sorted(row)})")
    value = row[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowError(f"field {key!r} should be true or false, got {value!r:.60}")


RowParser = Callable[[dict, int], list[Example]]


def parse_rows(rows: list[dict | BadRow], where: str, parse: RowParser, skip_bad_rows: bool = False,
               stats: dict | None = None) -> list[Example]:
    """Run `parse(row, number)` over every row; a bad row raises (naming file and row) or is skipped."""
    out: list[Example] = []
    skipped = 0
    for number, row in enumerate(rows, start=1):
        try:
            if isinstance(row, BadRow):
                raise RowError(row.why)
            out.extend(parse(row, number))
        except RowError as err:
            if not skip_bad_rows:
                raise ValueError(f"{where} row {number}: {err}; {SKIP_HINT}") from None
            skipped += 1
            log.warning("%s row %d skipped: %s", where, number, err)
    if skipped:
        log.warning("%s: skipped %d bad row(s) of %d", where, skipped, len(rows))
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + len(rows)
        stats["skipped_rows"] = stats.get("skipped_rows", 0) + skipped
    if not out:
        raise ValueError(f"{where}: no usable examples in {len(rows)} row(s) "
                         f"({skipped} skipped as bad); expected at least one")
    return out


_SPACE = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    """The key under which two prompts count as the same (case and whitespace ignored)."""
    return _SPACE.sub(" ", prompt).strip().lower()


def join_instruction(instruction: str, extra: str) -> str:
    """Alpaca's instruction plus optional input, as one user message."""
    return f"{instruction}\n\n{extra}" if extra else instruction


def row_id(prefix: str, number: int, part: int | None = None) -> str:
    return f"{prefix}-{number}" if part is None else f"{prefix}-{number}-{part}"

