"""Finding a source (explicit path, data directory, hub id) and parsing it with the right format."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from . import alpaca, hh, safety, truthfulqa
from .config import Source
from .hub import HubUnavailable, hub_rows
from .records import parse_rows, read_rows, require_columns
from .schema import Example

log = logging.getLogger(__name__)

# format name -> row parser factory (prefix, objective, source) -> parse(row, number)
PARSERS = {
    "alpaca": alpaca.alpaca_row,
    "alpaca_eval": alpaca.alpaca_eval_row,
    "beavertails": safety.beavertails_row,
    "beavertails_eval": safety.beavertails_eval_row,
    "pku_raw": safety.pku_raw_row,
    "pku_pairs": safety.pku_pairs_row,
    "pku_dpo": safety.pku_dpo_row,
    "hh_rlhf": hh.hh_rlhf_row,
    "truthfulqa": None,  # CSV or HF generation layout, picked by the columns
    "truthfulqa_mc": truthfulqa.multiple_choice_row,
}
# Columns that identify a format, most specific first (used by format "auto").
SIGNATURES = [
    ("truthfulqa_mc", {"question", "mc1_targets", "mc2_targets"}),
    ("truthfulqa", {"Question", "Best Answer", "Correct Answers", "Incorrect Answers"}),
    ("truthfulqa", {"question", "best_answer", "correct_answers", "incorrect_answers"}),
    ("pku_raw", {"prompt", "response_0", "response_1", "is_response_0_safe"}),
    ("pku_pairs", {"prompt", "response_safe", "response_unsafe"}),
    ("alpaca_eval", {"instruction", "output", "dataset"}),
    ("alpaca", {"instruction", "output"}),
    ("beavertails", {"prompt", "response", "is_safe"}),
    ("beavertails_eval", {"prompt", "category"}),
    ("hh_rlhf", {"chosen", "rejected"}),
]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
FILE_SUFFIXES = (".json", ".jsonl", ".csv")


def default_data_dir(explicit: str | None = None) -> Path | None:
    """data.data_dir, else $NEGOTIAX_DATA_DIR, else ../shared/data relative to the working directory.

    A directory that is named (config or environment) but missing is an error, not a silent fallback.
    """
    for name, candidate in (("data.data_dir", explicit), ("NEGOTIAX_DATA_DIR", os.environ.get("NEGOTIAX_DATA_DIR"))):
        if candidate:
            if not Path(candidate).is_dir():
                raise FileNotFoundError(f"{name}={candidate} is not a directory; point it at a directory laid "
                                        f"out like ../shared/data, or unset it to use the hub ids")
            return Path(candidate)
    return Path("../shared/data") if Path("../shared/data").is_dir() else None


def detect_format(rows: list, where: str) -> str:
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        raise ValueError(f"{where}: no row is a JSON object / table row, cannot detect its format")
    keys = set(first)
    if "prompt" in keys and isinstance(first.get("response"), list):
        return "pku_dpo"
    for name, needed in SIGNATURES:
        if needed <= keys:
            return name
    raise ValueError(f"{where}: cannot tell the format from columns {sorted(keys)}; set the source's "
                     f"format to one of {', '.join(PARSERS)}")


def parse_source_rows(rows: list, fmt: str, where: str, objective: str, skip_bad_rows: bool,
                      stats: dict | None) -> list[Example]:
    """Parse rows read from a file or the hub with a named format ("auto" detects it)."""
    if fmt == "auto":
        fmt = detect_format(rows, where)
        log.info("%s: detected format %s", where, fmt)
    prefix = Path(where).stem if not HUB_ID.match(where) else where.replace("/", "_")
    if fmt == "truthfulqa":
        first = next((r for r in rows if isinstance(r, dict)), {})
        if "Question" in first or where.lower().endswith(".csv"):
            require_columns(rows, truthfulqa.CSV_COLUMNS, where)
            factory = truthfulqa.csv_row
        else:
            factory = truthfulqa.generation_row
        prefix = "truthfulqa"
    else:
        factory = PARSERS[fmt]
        if fmt == "alpaca_eval":
            prefix = "alpaca_eval"
    return parse_rows(rows, where, factory(prefix, objective, where), skip_bad_rows, stats)


def locate(source: Source, data_dir: Path | None) -> tuple[Path | None, list[str]]:
    """The file a source names, and the places tried (for the error when there is none)."""
    tried: list[str] = []
    if not source.path:
        return None, tried
    path = Path(source.path).expanduser()
    candidates = [path] if path.is_absolute() else [path] + ([data_dir / path] if data_dir else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate, tried
        tried.append(f"file {candidate} (not found)")
    if not path.is_absolute() and data_dir is None:
        tried.append("data directory (none: data.data_dir unset, $NEGOTIAX_DATA_DIR unset, "
                     "../shared/data absent)")
    return None, tried


def hub_id_of(source: Source) -> str | None:
    if source.hub:
        return source.hub
    path = source.path or ""
    if HUB_ID.match(path) and not path.lower().endswith(FILE_SUFFIXES):
        return path
    return None


def load_source(source: Source, objective: str, data_dir: Path | None, skip_bad_rows: bool = False,
                stats: dict | None = None) -> list[Example] | None:
    """Parsed examples of one source; None for a missing optional source; one clear error otherwise."""
    path, tried = locate(source, data_dir)
    if path is not None:
        rows = read_rows(path)
        return parse_source_rows(rows, source.format, str(path), objective, skip_bad_rows, stats)
    hub_id = hub_id_of(source)
    if hub_id:
        try:
            rows = hub_rows(hub_id, source.hub_config, source.hub_split)
            fmt = source.hub_format or source.format
            return parse_source_rows(rows, fmt, hub_id, objective, skip_bad_rows, stats)
        except HubUnavailable as err:
            tried.append(f"hub dataset {hub_id} ({err})")
    else:
        tried.append("hub (no hub id for this source)")
    message = (f"{objective} data source {source.name!r}: nothing found. Tried: " + "; ".join(tried)
               + ". Fix: give an existing file path, set data.data_dir or NEGOTIAX_DATA_DIR to a directory "
               "laid out like ../shared/data, or go online (unset HF_HUB_OFFLINE) to use the hub id.")
    if source.optional:
        log.warning("skipping optional source: %s", message)
        return None
    raise FileNotFoundError(message)
