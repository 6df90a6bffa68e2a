"""What do a system's refusals say? The most common openings of the answers the refusal detector flags.

    python scripts/refusal_openings.py runs/quick/generations/negotiax.jsonl [--chars 38] [--top 5]

For each prompt objective in a generations file (`negotiax generate` / `negotiax run` write one per system), it
counts the answers the keyword detector flags as refusals and groups them by their first `--chars` characters
(leading whitespace dropped). One sentence that opens most refusals, on harmful and benign prompts alike, is a
pathway that learnt a fixed answer rather than when to give it. Prints a line per objective, then the same as JSON.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from negotiax.evaluation.evaluate import load_generations
from negotiax.refusal import refusal_rate


def read_generations(path: Path) -> list[dict]:
    """The generation rows of the file (bad JSON is an error naming the line); each must have an objective and an
    output."""
    rows = load_generations(path)
    for n, row in enumerate(rows, 1):  # load_generations skips no line but blank ones, which generate never writes
        if not isinstance(row, dict) or "objective" not in row or "output" not in row:
            raise SystemExit(f"{path}, line {n}: a generation row needs 'objective' and 'output' "
                             f"(it has {sorted(row) if isinstance(row, dict) else type(row).__name__}); pass a "
                             f"file from runs/<name>/generations/")
    if not rows:
        raise SystemExit(f"{path}: no generations in the file")
    return rows


def refusal_openings(rows: list[dict], chars: int, top: int) -> dict[str, dict]:
    """Per objective: its answer count, how many the detector flags, and the `top` commonest openings of those."""
    out = {}
    for objective in dict.fromkeys(r["objective"] for r in rows):
        outputs = [r["output"] for r in rows if r["objective"] == objective]
        refused = [o for o, flag in zip(outputs, refusal_rate(outputs)) if flag]
        openings = Counter(o.lstrip()[:chars] for o in refused).most_common(top)
        out[objective] = {"answers": len(outputs), "refusals": len(refused),
                          "openings": [{"text": text, "count": count} for text, count in openings]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generations", type=Path, help="a generations .jsonl file")
    p.add_argument("--chars", type=int, default=38, help="how many leading characters make an opening")
    p.add_argument("--top", type=int, default=5, help="how many openings to list per objective")
    args = p.parse_args(argv)
    if args.chars < 1 or args.top < 1:
        p.error("--chars and --top must be at least 1")
    if not args.generations.is_file():
        p.error(f"{args.generations}: no such file")
    result = refusal_openings(read_generations(args.generations), args.chars, args.top)
    for objective, r in result.items():
        listed = "; ".join(f"{o['count']} x {o['text']!r}" for o in r["openings"])
        print(f"{objective}: {r['refusals']} of {r['answers']} answers flagged as refusals; openings: {listed}")
    print(json.dumps({"generations": str(args.generations), "chars": args.chars, "objectives": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
