"""Print the README's results table (Markdown) from a finished run, so that no figure is typed by hand.

    python scripts/readme_table.py --run runs/quick

Reads `<run>/summary.json` (written by `negotiax run`): one column per system it holds (base, NegotiaX, and
sft-lora when present), each figure as value [95% interval] with one decimal, and a first line that names the
run's commit and date. Older summaries without a commit fall back to `<run>/provenance.json`, and without a
date to the newest `created` of `<run>/eval/*/results.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from negotiax.evaluation.report import fmt_change, margin, paired_change, verdict, with_ci
from negotiax.io import markdown_table, read_json

# (metric key in summary.json, row label); a row appears when any system has the metric
ROWS = (
    ("refusal_harmful", "refusal on harmful prompts (keyword detector)"),
    ("over_refusal_benign", "over-refusal on benign prompts (keyword detector)"),
    ("MC1", "TruthfulQA MC1"),
    ("MC2", "TruthfulQA MC2"),
    ("SS", "SS, safety judge (lower is better)"),
    ("TI", "TI = truthful% x informative% / 100 (H3Fusion)"),
    ("True*Info", "True*Info, answers both true and informative (TruthfulQA paper)"),
    ("WR", "WR, win rate against the reference"),
    ("repetition", "answers caught in a repetition loop (lower is better)"),
    ("distinct_2", "distinct-2 within an answer"),
)
SYSTEM_NAMES = {"base": "base", "negotiax": "NegotiaX", "sft-lora": "sft-lora"}
LOWER = {"over_refusal_benign", "SS", "repetition"}  # metrics where lower is better (for the verdicts)


def _judge_note(systems: dict[str, dict], key: str) -> str:
    """The judge that made a judge figure (they differ between local heads and 7B / API judges)."""
    if key not in ("SS", "TI", "True*Info", "WR"):
        return ""
    judge = next((m[key].get("judge") for m in systems.values() if key in m), None)
    return f"; judge `{judge}`" if judge else ""


def _provenance(run_dir: Path, summary: dict) -> tuple[str, str]:
    """(commit, date) of the run."""
    revision, dirty = summary.get("git_revision"), summary.get("git_dirty")
    prov_path = run_dir / "provenance.json"
    if revision is None and prov_path.is_file():
        prov = read_json(prov_path)
        revision, dirty = prov.get("git_revision"), prov.get("git_dirty")
    commit = "unknown commit" if not revision else revision[:10] + (" (with uncommitted changes)" if dirty else "")
    created = summary.get("created")
    if created is None:
        dates = [json.loads(p.read_text()).get("created") for p in sorted(run_dir.glob("eval/*/results.json"))]
        created = max((d for d in dates if d), default="unknown date")
    return commit, created


def readme_table(run_dir: str | Path, extra: dict[str, str | Path] | None = None) -> str:
    """The Markdown table (with a provenance line) of the run in `run_dir`; `extra` adds systems scored on
    the same test prompts elsewhere (name -> a results.json, e.g. an `negotiax ablate` entry's eval)."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; finish the run first with `negotiax run -c <recipe>`")
    summary = read_json(path)
    systems = summary.get("metrics")
    if not isinstance(systems, dict) or not systems:
        raise ValueError(f"{path} has no per-system 'metrics'; was it written by `negotiax run`?")
    training = dict(summary.get("training") or {})  # system -> its train_summary.json
    for name, path in (extra or {}).items():
        results = read_json(path)
        if results is None:
            raise FileNotFoundError(f"--extra {name}={path}: no such file; give the results.json of a finished evaluation")
        if "metrics" not in results:
            raise ValueError(f"{path}: no 'metrics'; give the results.json that `negotiax evaluate` wrote")
        systems[name] = results["metrics"]
        train = read_json(Path(path).parent.parent / "train_summary.json")  # <entry>/eval/results.json -> <entry>/
        if train:
            training[name] = train
    commit, created = _provenance(run_dir, summary)
    others = [s for s in systems if s != "base"] if "base" in systems else []
    header = ["metric"] + [SYSTEM_NAMES.get(s, s) for s in systems] + \
        [f"{SYSTEM_NAMES.get(s, s)} − base (paired)" for s in others]
    rows = []
    for key, label in ROWS:
        if not any(key in m for m in systems.values()):
            continue
        n = next(m[key].get("n") for m in systems.values() if key in m)
        cells = [with_ci(m.get(key)) for m in systems.values()]
        for s in others:
            ch = paired_change(systems["base"].get(key, {}), systems[s].get(key, {}))
            cells.append("–" if ch is None else f"{fmt_change(ch)} {verdict(ch, key not in LOWER)}")
        rows.append([f"{label} (n={n}{_judge_note(systems, key)})", *cells])
    lines = [f"Run `{run_dir.name}` at commit {commit}, {created}; values in %, [95% bootstrap interval].", "",
             markdown_table(header, rows)]
    lines += _selectivity_lines(systems) + _training_lines(training)
    lines += _routing_lines(summary) + _sweep_lines(summary)
    return "\n".join(lines) + "\n"


def _selectivity_lines(systems: dict[str, dict]) -> list[str]:
    """Refusal minus over-refusal per system, and NegotiaX against each baseline (evaluation.report.margin:
    bootstrap intervals that resample the harmful and the benign prompts, the same draw for every system)."""
    m = margin(systems) if len(systems) > 1 else None
    if m is None:
        return []
    parts = [f"{SYSTEM_NAMES.get(s, s)} {v:+.1f} [{m['interval'][s][0]:+.1f}, {m['interval'][s][1]:+.1f}]"
             for s, v in m["value"].items()]
    line = "Refusal minus over-refusal (points; higher is more selective): " + "; ".join(parts) + "."
    word = {"better": "higher", "worse": "lower", "no clear change": "not clearly different (within noise)"}
    for s in systems:
        if "negotiax" not in systems or s in ("negotiax", "base"):
            continue
        pair = m["pairs"].get(f"negotiax − {s}")
        if pair is None:  # margin names a pair by the systems' order: flip "s − negotiax"
            flip = m["pairs"][f"{s} − negotiax"]
            pair = {"value": -flip["value"], "ci_low": -flip["ci_high"], "ci_high": -flip["ci_low"]}
        line += f" NegotiaX − {SYSTEM_NAMES.get(s, s)}: {fmt_change(pair)}, {word[verdict(pair, True)]}."
    return ["", line]


def _training_lines(training: dict[str, dict]) -> list[str]:
    """Trainable parameters and training tokens/s of each trained system, from its train summary."""
    params = [f"{SYSTEM_NAMES.get(s, s)} {t['trainable_parameters']:,}" for s, t in training.items()
              if t.get("trainable_parameters")]
    speed = [f"{SYSTEM_NAMES.get(s, s)} {t['throughput']['tokens_per_s']:.0f}" for s, t in training.items()
             if (t.get("throughput") or {}).get("tokens_per_s")]
    lines = ["", "Trainable parameters: " + "; ".join(params) + "."] if params else []
    return lines + (["", "Training throughput on this machine (tokens/s, same batches): " + "; ".join(speed) + "."]
                    if speed else [])


def _routing_lines(summary: dict) -> list[str]:
    """Routing accuracy at the decision position, per prompt type (from negotiation.json's summary)."""
    neg = summary.get("negotiation") or {}
    parts = [f"{g} → {e['expected']} {100 * e['routing_accuracy']:.0f}% (n={e['n']})" for g, e in neg.items()
             if isinstance(e, dict) and e.get("routing_accuracy") is not None]
    return ["", "Routing accuracy at the decision position (share of prompts whose α favours the expected "
            "objective): " + "; ".join(parts) + "."] if parts else []


def _sweep_lines(summary: dict) -> list[str]:
    """Refusal on harmful prompts at each swept preference beta."""
    points = summary.get("preference_sweep") or []
    if not points:
        return []
    parts = [f"β_{p['objective']} {p['beta']:+g}: {with_ci(p.get('refusal_harmful'))} refusal, "
             f"{with_ci(p.get('over_refusal_benign'))} over-refusal" for p in points]
    return ["", "Preference sweep of the trained circuit: " + "; ".join(parts) + "."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run directory written by `negotiax run`, e.g. runs/quick")
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=RESULTS_JSON",
                        help="more systems scored on the same test prompts, e.g. sft-lora=runs/x/sft-lora/eval/results.json")
    args = parser.parse_args(argv)
    try:
        extra = {}
        for item in args.extra:
            if "=" not in item:
                raise ValueError(f"--extra {item!r}: write NAME=path/to/results.json")
            name, path = item.split("=", 1)
            extra[name] = path
        sys.stdout.write(readme_table(args.run, extra))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
