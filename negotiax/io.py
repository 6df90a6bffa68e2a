"""Files written so a reader never sees half of one, and JSONL read and written one way everywhere.

`atomic_write` / `write_json` write a sibling `.tmp` file and rename it over the target; `replace_dir`
does the same for a folder. `read_jsonl` / `append_jsonl` are the project's only JSONL reader and writer;
`sha256_file` hashes data files for the records that name them. Markdown tables and figures are written
through `markdown_table` and `save_figure` (with `pyplot`, matplotlib on the headless backend).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` writes the content to a sibling file, which then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any, default: Callable[[Any], Any] | None = str,
               allow_nan: bool = True) -> Path:
    """`data` as indented JSON plus a newline, written atomically; values JSON cannot hold go through
    `default` (str unless given; None makes them an error)."""
    text = json.dumps(data, indent=2, default=default, allow_nan=allow_nan) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def replace_dir(target: str | Path, write: Callable[[Path], Any], tmp: str | Path | None = None) -> Path:
    """`write(tmp)` fills a folder next to `target` (default `.<name>.tmp`), which is then swapped in:
    the old folder is renamed aside first and deleted last, so a reader sees the old or the new, never half."""
    target = Path(target)
    tmp = Path(tmp) if tmp is not None else target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def read_json(path: str | Path) -> Any | None:
    """The JSON value in a file, or None when the file does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def read_jsonl(path: str | Path, encoding: str = "utf-8",
               bad_line: Callable[[int, json.JSONDecodeError], Any] | None = None) -> list:
    """The values of a JSONL file, one per non-blank line, in order. A line that is not valid JSON is
    replaced by `bad_line(line_number, error)` when given (which may raise), else it is a ValueError that
    names the file and line; a file that does not exist reads as no rows."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding=encoding) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if bad_line is None:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err}); fix or remove the line") from err
                rows.append(bad_line(number, err))
    return rows


def append_jsonl(path: str | Path, rows: list[dict], ensure_ascii: bool = True) -> None:
    """Append one JSON line per row (the file is created if needed)."""
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in blocks (data files are recorded with their hashes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of already formatted cells (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot with the headless Agg backend (matplotlib is an optional dependency: the eval extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay the figure out, write it as an image (folders created), and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
