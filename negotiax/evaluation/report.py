"""The run report: one Markdown file and one self-contained HTML page (plots embedded), no library needed.

Inputs are plain data: per system (e.g. base, negotiax) a dict of metrics, each
{value, ci_low, ci_high, n, missing, judge}; the training metrics JSONL; the mean negotiation weights
by prompt type. Plots are PNG files next to the report, embedded in the HTML as data URIs.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io import markdown_table, pyplot, save_figure

Metric = dict[str, Any]

# The headline: one row per objective, with the first of its metrics that the systems have; True when
# higher is better. Then the other key metrics in the same form; categories and settings come below.
HEADLINE = {
    "helpful": [("WR", True, "win rate vs reference"), ("over_refusal_benign", False, "over-refusal, benign prompts")],
    "harmless": [("refusal_harmful", True, "refusal, harmful prompts"), ("SS", False, "unsafe answers (SS)")],
    "honest": [("TI", True, "truthful x informative (TI)"), ("MC2", True, "TruthfulQA MC2")],
}
KEY_METRICS = [("refusal_harmful", True), ("over_refusal_benign", False), ("SS", False), ("WR", True),
               ("TI", True), ("True*Info", True), ("MC1", True), ("MC2", True), ("repetition", False),
               ("distinct_2", True), ("Avg", True)]


def _statistic(stat: str, values: np.ndarray) -> np.ndarray:
    """The metric's statistic over the item axis: values (..., n) -> mean; (..., n, 2) -> product of the
    two columns' means (TI)."""
    if stat == "product":
        return values[..., 0].mean(-1) * values[..., 1].mean(-1)
    return values.mean(-1)


def paired_change(before: Metric, after: Metric, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict | None:
    """after - before on the items both systems were scored on, with a paired bootstrap interval
    (prompts resampled together for both systems). None when the entries carry no per-item values."""
    change = seed_change([before], [after], n_boot, seed, level)
    return None if change is None else {k: change[k] for k in ("value", "ci_low", "ci_high", "n")}


def seed_change(before: list[Metric], after: list[Metric], n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> dict | None:
    """after - before, each side averaged over its runs (e.g. training seeds, all scored on the same prompts),
    with a bootstrap interval that resamples the prompts (one draw shared by every run) and, independently,
    each side's runs. A difference inside it is within prompt and training-seed noise together; with one run
    a side contributes no seed variation, and with one run on each side this is the paired prompt bootstrap.
    None when a run carries no per-item values or the runs share no item."""
    items = [m.get("items") for m in (*before, *after)]
    if not before or not after or not all(items) or len({i.get("stat") for i in items}) != 1:
        return None
    ids = sorted(set.intersection(*(set(i["values"]) for i in items)))
    if not ids:
        return None
    x = np.asarray([[m["items"]["values"][i] for i in ids] for m in before], dtype=float)  # (runs, items[, 2])
    y = np.asarray([[m["items"]["values"][i] for i in ids] for m in after], dtype=float)
    scale, stat = float(items[0].get("scale", 1.0)), items[0].get("stat", "mean")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), (n_boot, len(ids)))
    runs_x = rng.integers(0, len(x), (n_boot, len(x)))
    runs_y = rng.integers(0, len(y), (n_boot, len(y)))
    per_run_x = _statistic(stat, x[:, idx]).T  # (n_boot, runs): each run's statistic on each prompt draw
    per_run_y = _statistic(stat, y[:, idx]).T
    draws = (np.take_along_axis(per_run_y, runs_y, 1).mean(1) - np.take_along_axis(per_run_x, runs_x, 1).mean(1))
    low, high = np.quantile(draws * scale, [(1 - level) / 2, (1 + level) / 2])
    value = float(_statistic(stat, y).mean() - _statistic(stat, x).mean()) * scale
    return {"value": value, "ci_low": float(low), "ci_high": float(high), "n": len(ids), "runs": [len(x), len(y)]}


def verdict(change: dict | None, higher_is_better: bool) -> str:
    """better / worse / no clear change, at the interval's level (the interval excludes 0 or not)."""
    if change is None:
        return "–"
    if change["ci_low"] > 0:
        return "better" if higher_is_better else "worse"
    if change["ci_high"] < 0:
        return "worse" if higher_is_better else "better"
    return "no clear change"


def with_ci(m: Metric | None) -> str:
    """value [ci_low, ci_high] with one decimal ("–" for no value)."""
    if not m or m.get("value") is None:
        return "–"
    ci = f" [{_one(m.get('ci_low'))}, {_one(m.get('ci_high'))}]" if m.get("ci_low") is not None else ""
    return f"{_one(m['value'])}{ci}"


def fmt_change(change: dict) -> str:
    """A change with its interval, signed, one decimal: "+8.0 [-2.0, +17.0]"."""
    def signed(x: float) -> str:
        return f"{round(x, 1) + 0.0:+.1f}"  # + 0.0: a tiny negative prints +0.0, not -0.0
    return f"{signed(change['value'])} [{signed(change['ci_low'])}, {signed(change['ci_high'])}]"


def _one(value: Any) -> str:
    return _fmt(value, 1) if isinstance(value, (int, float)) else "–"


def change_rows(systems: dict[str, dict[str, Metric]], metrics: list[tuple[str, bool, str]],
                reference: str = "base") -> list[list[str]]:
    """Rows: label, metric, which way is better, each system's value, then per other system its change
    against the reference with the paired 95% interval and the verdict. One decimal."""
    rows = []
    for label, name, higher in metrics:
        ref = systems[reference].get(name)
        if ref is None:
            continue
        row = [label, name, "higher" if higher else "lower"]
        row += [_one(systems[s].get(name, {}).get("value")) for s in systems]
        for s in systems:
            if s == reference:
                continue
            ch = paired_change(ref, systems[s].get(name, {}))
            row.append("–" if ch is None else fmt_change(ch))
            row.append(verdict(ch, higher))
        rows.append(row)
    return rows


def change_header(systems: dict[str, Any], reference: str = "base") -> list[str]:
    header = ["objective", "metric", "better"] + list(systems)
    for s in systems:
        if s != reference:
            header += [f"{s} − {reference} [95% CI]", "verdict"]
    return header


def headline_metrics(systems: dict[str, dict[str, Metric]]) -> list[tuple[str, str, bool]]:
    """(objective, metric, higher is better): each objective's first metric present in every system."""
    out = []
    for objective, options in HEADLINE.items():
        for name, higher, _ in options:
            if all(name in m and m[name].get("value") is not None for m in systems.values()):
                out.append((objective, name, higher))
                break
    return out


def margin(systems: dict[str, dict[str, Metric]], n_boot: int = 2000, seed: int = 0) -> dict | None:
    """refusal on harmful prompts − over-refusal on benign prompts per system, and each system's margin
    minus the others' with a paired bootstrap interval (each prompt set resampled on its own)."""
    need = ("refusal_harmful", "over_refusal_benign")
    if not all(all(n in m and m[n].get("items") for n in need) for m in systems.values()):
        return None
    rng = np.random.default_rng(seed)
    draws, values = {}, {}
    index = {}
    for n in need:
        ids = sorted(set.intersection(*(set(m[n]["items"]["values"]) for m in systems.values())))
        index[n] = (ids, rng.integers(0, len(ids), (n_boot, len(ids))))
    for s, m in systems.items():
        parts, point = [], []
        for n in need:
            ids, idx = index[n]
            v = np.asarray([m[n]["items"]["values"][i] for i in ids], dtype=float) * m[n]["items"]["scale"]
            parts.append(v[idx].mean(-1))
            point.append(v.mean())
        draws[s] = parts[0] - parts[1]
        values[s] = point[0] - point[1]
    out = {"value": values, "interval": {s: tuple(float(q) for q in np.quantile(d, [0.025, 0.975]))
                                         for s, d in draws.items()}, "pairs": {}}
    names = list(systems)
    for i, s in enumerate(names):
        for t in names[i + 1:]:
            d = draws[t] - draws[s]
            low, high = np.quantile(d, [0.025, 0.975])
            out["pairs"][f"{t} − {s}"] = {"value": values[t] - values[s], "ci_low": float(low), "ci_high": float(high)}
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metric_rows(systems: dict[str, dict[str, Metric]]) -> list[list[str]]:
    """One row per metric: name, then value [ci] for each system, then n / missing and the judge."""
    names: list[str] = []
    for metrics in systems.values():
        names += [m for m in metrics if m not in names]
    rows = []
    for name in names:
        row = [name]
        for metrics in systems.values():
            m = metrics.get(name)
            if m is None:
                row.append("–")
                continue
            ci = f" [{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]" if m.get("ci_low") is not None else ""
            row.append(f"{_fmt(m.get('value'))}{ci}")
        first = next((s[name] for s in systems.values() if name in s), {})
        row.append(f"{first.get('n', '–')} / {first.get('missing', 0)}")
        row.append(str(first.get("judge") or first.get("source") or "offline"))
        rows.append(row)
    return rows


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_metrics(systems: dict[str, dict[str, Metric]], path: Path) -> Path | None:
    """Grouped bars per headline metric (in %) and system, with the bootstrap 95% interval as error bars."""
    first = next(iter(systems.values()), {})
    # Headline percentages only: per-category breakdowns and NLL (another scale) stay in the table.
    names = [n for n, m in first.items() if "/" not in n and str(m.get("unit", "")).startswith("%")
             and all(isinstance(s.get(n, {}).get("value"), (int, float)) for s in systems.values())]
    if not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.9 * len(names) * len(systems))), 4))
    width = 0.8 / len(systems)
    for j, (system, metrics) in enumerate(systems.items()):
        xs = [i + j * width for i in range(len(names))]
        vals = [metrics[n]["value"] for n in names]
        lo = [v - (metrics[n].get("ci_low") if metrics[n].get("ci_low") is not None else v) for n, v in zip(names, vals)]
        hi = [(metrics[n].get("ci_high") if metrics[n].get("ci_high") is not None else v) - v for n, v in zip(names, vals)]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, label=system)
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_title("Offline and judge metrics (95% bootstrap intervals)")
    ax.legend()
    return save_figure(fig, path)


def plot_training(rows: list[dict], path: Path) -> Path | None:
    """Response cross-entropy per objective (keys "<objective>/ce" of the metrics JSONL) against the step."""
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        for key, value in row.items():
            objective, _, term = key.rpartition("/")
            if term == "ce" and objective and "/" not in objective and isinstance(value, (int, float)):
                xs, ys = series.setdefault(objective, ([], []))
                xs.append(row["step"])
                ys.append(value)
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("response cross-entropy")
    ax.set_title("Training curves per objective")
    ax.legend()
    return save_figure(fig, path)


def plot_negotiation(alpha: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Heatmap: prompt type (rows) x objective (columns), mean negotiation weight."""
    if not alpha:
        return None
    plt = pyplot()
    types = list(alpha)
    objectives = list(next(iter(alpha.values())))
    grid = [[alpha[t][o] for o in objectives] for t in types]
    fig, ax = plt.subplots(figsize=(1.4 * len(objectives) + 2, 0.6 * len(types) + 1.5))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(objectives)), objectives)
    ax.set_yticks(range(len(types)), types)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.5 else "black")
    ax.set_xlabel("objective")
    ax.set_ylabel("prompt type")
    ax.set_title("Mean negotiation weight α")
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
         "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}")


def negotiation_rows(negotiation: dict, objectives: list[str]) -> list[list[str]]:
    """Per prompt type and reading (decision position, prompt tokens, answer tokens): mean α per objective,
    and the routing accuracy at the decision position."""
    rows = []
    for group, entry in negotiation.items():
        for reading in ("decision", "prompt", "answer"):
            if reading in entry:
                acc = entry.get("routing_accuracy") if reading == "decision" else None
                rows.append([group, str(entry.get("expected") or "–"), reading,
                             *(_fmt(entry[reading].get(o), 2) for o in objectives),
                             f"{100 * acc:.0f}%" if acc is not None else ""])
    return rows


def _negotiation_grid(negotiation: dict, reading: str) -> dict[str, dict[str, float]]:
    return {g: e[reading] for g, e in negotiation.items() if reading in e}


def _details(summary: str, inner: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>"


def write_report(out_dir: str | Path, title: str, systems: dict[str, dict[str, Metric]], *,
                 train_rows: list[dict] | None = None, alpha: dict | None = None,
                 notes: list[str] | None = None, settings: dict[str, Any] | None = None,
                 examples: list[dict] | None = None, training: dict[str, dict] | None = None,
                 sweep: list[dict] | None = None, reference: str = "base") -> tuple[Path, Path]:
    """Write report.md and report.html (plus PNGs) into out_dir; return both paths.

    It opens with the answer to "did it work?": one row per objective, each system against `reference`
    with a paired 95% interval and a verdict; then the other key metrics, the refusal margin, the
    negotiation (α at the decision position), training cost, examples; every metric and the settings last.
    `alpha` is `negotiax.evaluation.negotiation.summarize`'s output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = change_header(systems, reference)
    headline = change_rows(systems, headline_metrics(systems), reference)
    key = change_rows(systems, [(n, n, h) for n, h in KEY_METRICS], reference)
    for row in key:
        row[0] = next((o for o, ms in HEADLINE.items() if row[1] in [m for m, _, _ in ms]), "other")
    full_header = ["metric", *[f"{s} (95% CI)" for s in systems], "n / missing", "judge"]
    full = metric_rows(systems)
    main_rows = [r for r in full if "/" not in r[0]]
    category_rows = [r for r in full if "/" in r[0]]
    margins = margin(systems)
    alpha = alpha or {}
    objectives: list[str] = []
    if alpha and "decision" in next(iter(alpha.values())):
        objectives = list(next(iter(alpha.values()))["decision"])
    neg_header = ["prompt type", "expected", "α at", *objectives, "routing accuracy"]
    neg_rows = negotiation_rows(alpha, objectives) if objectives else []
    cost_rows = [[s, f"{t.get('trainable_parameters', 0):,}",
                  _one((t.get("throughput") or {}).get("tokens_per_s"))] for s, t in (training or {}).items()]
    plots = [("Metrics", plot_metrics(systems, out / "metrics.png")),
             ("Training", plot_training(train_rows or [], out / "training.png")),
             ("Negotiation at the decision position",
              plot_negotiation(_negotiation_grid(alpha, "decision"), out / "negotiation.png"))]
    plots = [(name, p) for name, p in plots if p is not None]
    sweep_header = ["objective", "β", "refusal, harmful prompts [95% CI]", "over-refusal, benign prompts [95% CI]"]
    sweep_rows = [[p["objective"], f"{p['beta']:+g}", *(with_ci(p.get(k)) for k in ("refusal_harmful", "over_refusal_benign"))]
                  for p in sweep or []]
    settings_rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in (settings or {}).items()]
    example_rows = [[e.get("objective", ""), e.get("prompt", "")[:160], *(e.get(s, "")[:200] for s in systems)]
                    for e in (examples or [])]
    ci_note = ("Changes are against `base` on the same prompts, with paired 95% bootstrap intervals; the verdict "
               "is better or worse when the interval excludes 0, else no clear change.")
    margin_lines = []
    if margins:
        margin_lines.append("Refusal margin (refusal on harmful − over-refusal on benign prompts, points): " +
                            ", ".join(f"{s} {v:.1f}" for s, v in margins["value"].items()) + ".")
        margin_lines += [f"{k}: {fmt_change(v)}"
                         for k, v in margins["pairs"].items()]

    md = [f"# {title}", "", "## Did it work?", "", markdown_table(head, headline), "", ci_note, ""]
    md += [f"- {line}" for line in margin_lines]
    md += ["", "## Key metrics", "", markdown_table(head, key)]
    if sweep_rows:
        md += ["", "## Preference β moves the answers", "", "The trained circuit decoded again with one objective's "
               "β changed (the others as in the run).", "", markdown_table(sweep_header, sweep_rows)]
    if neg_rows:
        md += ["", "## Negotiation", "", "Mean α per prompt type: at the decision position (the last prompt "
               "token), over the user's prompt tokens (chat template excluded) and over the answer tokens; "
               "routing accuracy = share of prompts whose decision α favours the expected objective.", "",
               markdown_table(neg_header, neg_rows)]
    if cost_rows:
        md += ["", "## Training cost", "", markdown_table(["system", "trainable parameters", "training tokens/s"],
                                                          cost_rows)]
    if example_rows:
        md += ["", "## Examples", "", "The first prompts of each test set (a fixed rule, not picked by hand).", "",
               markdown_table(["objective", "prompt", *systems], example_rows)]
    md += ["", "## Notes", "", *(f"- {n}" for n in notes or [])]
    for name, p in plots:
        md += ["", f"## {name}", "", f"![{name}]({p.name})"]
    md += ["", "## All metrics", "", markdown_table(full_header, main_rows)]
    if category_rows:
        md += ["", "### By category", "", markdown_table(full_header, category_rows)]
    md += ["", "Intervals are 95% bootstrap intervals over prompts; `missing` counts judge calls that failed and "
           "were excluded (never scored)."]
    if settings_rows:
        md += ["", "## Settings", "", markdown_table(["setting", "value"], settings_rows)]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Did it work?</h2>", html_table(head, headline),
            f"<p>{html.escape(ci_note)}</p>"]
    if margin_lines:
        body.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in margin_lines) + "</ul>")
    body += ["<h2>Key metrics</h2>", html_table(head, key)]
    if sweep_rows:
        body += ["<h2>Preference β moves the answers</h2>", html_table(sweep_header, sweep_rows)]
    if neg_rows:
        body += ["<h2>Negotiation</h2>", html_table(neg_header, neg_rows)]
    if cost_rows:
        body += ["<h2>Training cost</h2>", html_table(["system", "trainable parameters", "training tokens/s"], cost_rows)]
    if example_rows:
        body += ["<h2>Examples</h2>", "<p>The first prompts of each test set (a fixed rule, not picked by hand).</p>",
                 html_table(["objective", "prompt", *systems], example_rows)]
    body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes or []) + "</ul>")
    for name, p in plots:
        body += [f"<h2>{name}</h2>", f'<img alt="{name}" src="{_data_uri(p)}">']
    body.append(_details("All metrics", html_table(full_header, main_rows)))
    if category_rows:
        body.append(_details("By category", html_table(full_header, category_rows)))
    if settings_rows:
        body.append(_details("Settings", html_table(["setting", "value"], settings_rows)))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page)
    return md_path, html_path
