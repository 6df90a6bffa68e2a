"""Alpaca-style instruction files and the AlpacaEval set with its reference outputs."""
from __future__ import annotations

from pathlib import Path

from .records import join_instruction, parse_rows, read_rows, row_id, text
from .schema import Example


def alpaca_row(prefix: str, objective: str, source: str):
    """Parser for {instruction, input, output}: one training example (prompt -> output)."""

    def parse(row: dict, number: int) -> list[Example]:
        extra = text(row, "input", allow_empty=True) if "input" in row else ""
        prompt = join_instruction(text(row, "instruction"), extra)
        return [Example(id=row_id(prefix, number), objective=objective, prompt=prompt,
                        response=text(row, "output"), source=source)]

    return parse


def alpaca_eval_row(prefix: str, objective: str, source: str):
    """Parser for AlpacaEval {dataset, instruction, output, generator}: the output is the reference.

    A reference may be empty (text-davinci-003 left row 248 blank); it is kept, as AlpacaEval does.
    """

    def parse(row: dict, number: int) -> list[Example]:
        extra = text(row, "input", allow_empty=True) if "input" in row else ""
        dataset = text(row, "dataset") if "dataset" in row else None
        meta = {"generator": row["generator"]} if isinstance(row.get("generator"), str) else {}
        return [Example(id=row_id(prefix, number), objective=objective,
                        prompt=join_instruction(text(row, "instruction"), extra),
                        reference=text(row, "output", allow_empty=True), category=dataset, source=source, meta=meta)]

    return parse


def load_alpaca(path: str | Path, objective: str = "helpful", skip_bad_rows: bool = False,
                stats: dict | None = None) -> list[Example]:
    """An Alpaca-style JSON list or JSONL file of {instruction, input, output}."""
    path = Path(path)
    return parse_rows(read_rows(path), str(path), alpaca_row(path.stem, objective, str(path)),
                      skip_bad_rows, stats)


def load_alpaca_eval(path: str | Path, objective: str = "helpful", skip_bad_rows: bool = False,
                     stats: dict | None = None) -> list[Example]:
    """AlpacaEval `*_model_outputs.json`: instructions with reference outputs and their `dataset`."""
    path = Path(path)
    return parse_rows(read_rows(path), str(path), alpaca_eval_row("alpaca_eval", objective, str(path)),
                      skip_bad_rows, stats)
