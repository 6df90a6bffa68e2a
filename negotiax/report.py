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

Metric = dict[str, Any]


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


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(systems: dict[str, dict[str, Metric]], path: Path) -> Path | None:
    """Grouped bars per headline metric (in %) and system, with the bootstrap 95% interval as error bars."""
    first = next(iter(systems.values()), {})
    # Headline percentages only: per-category breakdowns and NLL (another scale) stay in the table.
    names = [n for n, m in first.items() if "/" not in n and str(m.get("unit", "")).startswith("%")
             and all(isinstance(s.get(n, {}).get("value"), (int, float)) for s in systems.values())]
    if not names:
        return None
    plt = _plt()
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
    return _save(fig, path)


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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("response cross-entropy")
    ax.set_title("Training curves per objective")
    ax.legend()
    return _save(fig, path)


def plot_negotiation(alpha: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Heatmap: prompt type (rows) x objective (columns), mean negotiation weight."""
    if not alpha:
        return None
    plt = _plt()
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
    return _save(fig, path)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
         "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}")


def write_report(out_dir: str | Path, title: str, systems: dict[str, dict[str, Metric]], *,
                 train_rows: list[dict] | None = None, alpha: dict[str, dict[str, float]] | None = None,
                 notes: list[str] | None = None, settings: dict[str, Any] | None = None,
                 examples: list[dict] | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html (plus PNGs) into out_dir; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ["metric", *[f"{s} (95% CI)" for s in systems], "n / missing", "judge"]
    rows = metric_rows(systems)
    plots = [("Metrics", plot_metrics(systems, out / "metrics.png")),
             ("Training", plot_training(train_rows or [], out / "training.png")),
             ("Negotiation", plot_negotiation(alpha or {}, out / "negotiation.png"))]
    plots = [(name, p) for name, p in plots if p is not None]
    settings_rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in (settings or {}).items()]
    example_rows = [[e.get("objective", ""), e.get("prompt", "")[:160], *(e.get(s, "")[:200] for s in systems)]
                    for e in (examples or [])]

    md = [f"# {title}", "", *(f"- {n}" for n in notes or []), "", "## Results", "", markdown_table(header, rows)]
    md += ["", "Intervals are 95% bootstrap intervals over prompts; `missing` counts judge calls that failed and "
           "were excluded (never scored)."]
    for name, p in plots:
        md += ["", f"## {name}", "", f"![{name}]({p.name})"]
    if example_rows:
        md += ["", "## Examples", "", markdown_table(["objective", "prompt", *systems], example_rows)]
    if settings_rows:
        md += ["", "## Settings", "", markdown_table(["setting", "value"], settings_rows)]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    body = [f"<h1>{html.escape(title)}</h1>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes or []) + "</ul>",
            "<h2>Results</h2>", html_table(header, rows),
            "<p>Intervals are 95% bootstrap intervals over prompts; <code>missing</code> counts judge calls that "
            "failed and were excluded (never scored).</p>"]
    for name, p in plots:
        body += [f"<h2>{name}</h2>", f'<img alt="{name}" src="{_data_uri(p)}">']
    if example_rows:
        body += ["<h2>Examples</h2>", html_table(["objective", "prompt", *systems], example_rows)]
    if settings_rows:
        body += ["<h2>Settings</h2>", html_table(["setting", "value"], settings_rows)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page)
    return md_path, html_path
