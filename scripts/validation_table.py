"""Print a Markdown table of validation runs (the JSON files `scripts/validate_alignment.py --json` writes).

    .venv/bin/python scripts/validation_table.py runs/val/*/val.json

One row per run: its overrides (less output_dir and progress) and any --gate it was decoded at, the
decision-position routing accuracy per validation group, refusal on the harmful prompts at each harmless
preference, and over-refusal on the benign prompts (at 0) and on the helpful_base ones (at each preference
measured), with the base model's rates in the first row. Every number is read from the files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

GROUPS = ("harmful", "benign", "benign_hb", "honest")


def _cell(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def table(runs: list[dict]) -> str:
    betas = sorted({k.split("@")[1] for r in runs for k in r if k.startswith("refusal_harmful@")}, key=float)
    hb_betas = sorted({k.split("@")[1] for r in runs for k in r if k.startswith("over_refusal_benign_hb@")}, key=float)
    header = (["run (overrides)"] + [f"routing {g}" for g in GROUPS] + [f"refusal β={b}" for b in betas]
              + ["over-refusal benign"] + [f"over-refusal benign_hb β={b}" for b in hb_betas])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base: dict = {}  # the same base model on the same prompts in every run: merge, and check that they agree
    for r in runs:
        for key, value in r["base"].items():
            if base.setdefault(key, value) != value:
                raise ValueError(f"base {key} differs between validation runs ({base[key]} vs {value})")
    lines.append("| base (no circuit) | " + " | ".join("–" for _ in GROUPS) + " | "
                 + " | ".join(_cell(base["refusal_harmful"]) if float(b) == 0 else "–" for b in betas) + " | "
                 + f"{_cell(base.get('over_refusal_benign'))} | "
                 + " | ".join(_cell(base.get("over_refusal_benign_hb")) if float(b) == 0 else "–" for b in hb_betas) + " |")
    for r in runs:
        kept = [o for o in r["overrides"] if not o.startswith(("output_dir=", "train.progress="))]
        decoded = [f"`--gate {r['gate']:g}`"] if r.get("gate") is not None else []  # the circuit decoded hard-routed
        name = " ".join([f"`{Path(r['recipe']).name}`"] + [f"`{o}`" for o in kept] + decoded)
        cells = [_cell(r["routing_accuracy"].get(g)) for g in GROUPS]
        cells += [_cell(r.get(f"refusal_harmful@{b}")) for b in betas]
        cells += [_cell(r.get("over_refusal_benign@+0"))] + [_cell(r.get(f"over_refusal_benign_hb@{b}")) for b in hb_betas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="val.json files, in the order of the rows")
    args = p.parse_args()
    runs = [json.loads(Path(f).read_text()) for f in args.files]
    print(table(runs))


if __name__ == "__main__":
    main()
