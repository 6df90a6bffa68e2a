"""`negotiax results`: the paper's experiments on one recipe, run resumably, written to docs/results/.

One command runs, in order:
1. the ablation grid (`negotiax ablate`): every variant and ablation trained and evaluated the same way, then
   the extra seeds of the key rows, then the layer and rank sweeps. Each entry is a run folder that is reused
   when its fingerprints match, so an interrupted grid resumes where it stopped;
2. the β sweep (`negotiax sweep`) of the grid's `negotiax` circuit, on the first test prompts;
3. the interpretability analyses (`negotiax interpret`) of the same circuit;
4. the compute profile (`negotiax profile`) of base and every circuit variant, with the grid's circuits.
Then it writes `docs_dir`: the tables (Markdown and CSV), the figures (PNG) and a README whose every number
is read from the run. A finished stage is reused when the settings stored next to its output are the same.
`stages=[...]` runs a subset; `report_only=true` rewrites docs_dir from what has finished, and a row that has
not run is listed as such, never filled in.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import fingerprint as fp
from ..evaluation.report import fmt_change, paired_change, seed_change, verdict, with_ci
from ..io import append_jsonl, atomic_write, markdown_table, pyplot, read_json, read_jsonl, save_figure, write_json
from ..recipe import load_recipe
from .ablate import AblateConfig, Entry, ablate, grid, seed_name, slug
from .common import cells, clean, write_csv
from .interpret import InterpretConfig, run_interpret
from .profile import ProfileConfig, run_profile
from .sweep import SweepConfig, run_sweep

log = logging.getLogger(__name__)

STAGES = ("ablate", "sweep", "interpret", "profile")
SUMMARY_START, SUMMARY_END = "<!-- results-summary: copied from docs/results/summary.md -->", "<!-- /results-summary -->"
# The comparisons the README leads with: (row, against, what the row changes).
HEADLINE = [("negotiax", "base", "the full method against the backbone"),
            ("negotiax", "pathways", "negotiation against naive (uniform) fusion of the same pathways"),
            ("negotiax", "sft-lora", "the circuit against LoRA SFT on the same data and steps"),
            ("negotiax", "A1", "axis embeddings and the routing loss (A1 removes them)"),
            ("negotiax", "A2", "a trained negotiation (A2 freezes W_q, W_k, W_v)")]
# metric -> (label, higher is better)
KEY_METRICS = {"refusal_harmful": ("refusal on harmful", True), "over_refusal_benign": ("over-refusal on benign", False),
               "repetition": ("repetition", False), "MC1": ("MC1", True), "MC2": ("MC2", True), "TI": ("TI", True),
               "True*Info": ("True*Info", True), "SS": ("SS (local judge)", False)}
ABLATION_COLS = ["entry", "what", "params", "train tok/s", *(label for label, _ in KEY_METRICS.values())]
SEED_COLS = ["entry", "seeds", *(label for label, _ in KEY_METRICS.values())]


@dataclass
class ResultsConfig:
    """The grid, the sweep, the analyses and the profile, all on one recipe."""

    recipe: str = "configs/quick.yaml"
    recipe_overrides: list[str] = field(default_factory=list)
    output_dir: str = "runs/paper_cpu"  # the runs (checkpoints, generations, judge caches)
    docs_dir: str = "docs/results"  # the tables, figures and README
    # A README whose block between SUMMARY_START and SUMMARY_END gets summary.md (none: no README is touched)
    summary_readme: str | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    report_only: bool = False
    variants: list[str] = field(default_factory=lambda: ["base", "negotiax", "sft-lora", "pathways", "branched",
                                                         "mac", "A1", "A2", "A3"])
    seeds: list[int] = field(default_factory=lambda: [1, 2])  # extra seeds (the recipe's seed is the first)
    seed_variants: list[str] = field(default_factory=lambda: ["negotiax", "sft-lora", "pathways"])
    layers_sweep: list[int] = field(default_factory=list)  # injection layers besides the recipe's
    ranks_sweep: list[int] = field(default_factory=list)  # pathway ranks besides the recipe's
    sweep: SweepConfig = field(default_factory=SweepConfig)
    interpret: InterpretConfig = field(default_factory=InterpretConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"stages={self.stages}: unknown {bad}; choose from {', '.join(STAGES)}")
        missing = [v for v in self.seed_variants if v not in self.variants]
        if missing:
            raise ValueError(f"seed_variants={self.seed_variants}: {missing} not in variants={self.variants}")
        AblateConfig(variants=self.variants)  # the same check of variant names as `negotiax ablate`


def seed_runs(rows: dict[str, dict], cfg: ResultsConfig, variant: str) -> list[dict]:
    """The finished rows of one variant over its seeds (the recipe's seed first)."""
    return [rows[n] for n in [variant, *(seed_name(variant, s) for s in cfg.seeds)] if n in rows]


def ablate_config(cfg: ResultsConfig) -> AblateConfig:
    return AblateConfig(recipe=cfg.recipe, recipe_overrides=list(cfg.recipe_overrides), variants=list(cfg.variants),
                        layers_sweep=list(cfg.layers_sweep), ranks_sweep=list(cfg.ranks_sweep),
                        output_dir=str(Path(cfg.output_dir) / "ablate"))


def entries(cfg: ResultsConfig) -> list[Entry]:
    """The entries in run order: the variants at the recipe's seed, the extra seeds of the key rows, then the
    layer and rank sweeps (most informative first, so an interrupted grid already has the key rows)."""
    acfg = ablate_config(cfg)
    main = grid(dataclasses.replace(acfg, layers_sweep=[], ranks_sweep=[]))
    sweeps = grid(dataclasses.replace(acfg, variants=["negotiax"]))[1:]
    by_name = {e.name: e for e in main}
    seeded = [Entry(seed_name(v, s), f"{by_name[v].description}, seed {s}", dict(by_name[v].circuit), seed=s, kind=v)
              for s in cfg.seeds for v in cfg.seed_variants]
    return main + seeded + sweeps


def run_grid(cfg: ResultsConfig, model=None, tokenizer=None) -> dict:
    """The ablation grid plus seeds and sweeps (`negotiax ablate` on `entries(cfg)`), each entry's time logged."""
    return ablate(ablate_config(cfg), model, tokenizer, entries=entries(cfg),
                  on_entry=lambda entry, seconds: _log_wall(cfg, entry.name, seconds))


def _log_wall(cfg: ResultsConfig, what: str, seconds: float) -> None:
    """One line per piece of work and invocation in <output_dir>/wall.jsonl: a resumed grid adds its time."""
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    append_jsonl(Path(cfg.output_dir) / "wall.jsonl", [{
        "what": what, "wall_s": round(seconds, 1), "git_revision": fp.git_state()[0],
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}])


def run_stage(cfg: ResultsConfig, stage: str) -> None:
    """sweep / interpret / profile on the grid's circuits. A stage finished with the same settings is reused
    (its fingerprint record, as every stage of a run keeps one); one made with other settings is set aside as
    <stage>.old-<timestamp> (nothing deleted) and run again."""
    ablate_dir = Path(cfg.output_dir) / "ablate"
    out = Path(cfg.output_dir) / stage
    sub = getattr(cfg, stage)
    if stage == "profile":
        dirs = {v: str(ablate_dir / slug(v) / ("lora" if v == "sft-lora" else "circuit"))
                for v in sub.variants if v not in ("base", "branched")}
        sub = dataclasses.replace(sub, circuit_dirs={**dirs, **sub.circuit_dirs}, output_dir=str(out))
    else:
        circuit = sub.circuit_dir or str(ablate_dir / "negotiax" / "circuit")
        sub = dataclasses.replace(sub, circuit_dir=circuit, output_dir=str(out))
    values = fp.flatten(clean(asdict(sub)))
    record = out / "fingerprint.json"
    try:
        if fp.check(record, stage, values, outputs_exist=(out / f"{stage}.json").is_file()):
            log.info("results: %s is finished with these settings (%s); reused", stage, out)
            return
    except fp.SettingsChangedError as err:
        log.warning("results: %s", err)
        fp.set_aside(out)
    start = time.perf_counter()
    {"sweep": run_sweep, "interpret": run_interpret, "profile": run_profile}[stage](sub)
    fp.write_record(record, stage, values)
    _log_wall(cfg, stage, time.perf_counter() - start)


def results(cfg: ResultsConfig) -> Path:
    """Run the stages (resumably), then write docs_dir; returns docs_dir/README.md."""
    revision = _git_revision()  # before anything is written: the docs it writes are tracked files
    if not cfg.report_only:
        for stage in cfg.stages:
            if stage == "ablate":
                run_grid(cfg)
            else:
                run_stage(cfg, stage)
    return write_docs(cfg, revision)


# ---------------------------------------------------------------- docs/results


def _git_revision() -> str:
    rev, dirty = fp.git_state()
    return "unknown" if not rev else rev[:7] + (" with uncommitted changes" if dirty else "")


def headline(rows: dict[str, dict], cfg: ResultsConfig) -> list[dict]:
    """Paired changes (same prompts) of the headline comparisons at the recipe's seed, with 95% intervals and a
    verdict; where a side has several training seeds, also the change of the seed means with an interval that
    resamples seeds and prompts together (`seeds_*`), the one to read: it includes training-seed noise."""
    out = []
    for name, other, what in HEADLINE:
        if name not in rows or other not in rows:
            out.append({"comparison": f"{name} vs {other}", "what": what, "status": "not run"})
            continue
        a, b = rows[other]["metrics"], rows[name]["metrics"]  # each with its per-prompt values ("items")
        for metric, (label, higher) in KEY_METRICS.items():
            if metric not in a or metric not in b:
                continue
            change = paired_change(a[metric], b[metric])
            if change is None:
                continue
            row = {"comparison": f"{name} vs {other}", "what": what, "metric": label,
                   "before": a[metric]["value"], "after": b[metric]["value"], "change": change["value"],
                   "ci_low": change["ci_low"], "ci_high": change["ci_high"], "n": change["n"],
                   "verdict": verdict(change, higher)}
            runs_a = [r["metrics"][metric] for r in seed_runs(rows, cfg, other) if metric in r["metrics"]]
            runs_b = [r["metrics"][metric] for r in seed_runs(rows, cfg, name) if metric in r["metrics"]]
            seeds = seed_change(runs_a, runs_b) if max(len(runs_a), len(runs_b)) > 1 else None
            if seeds is not None:
                row.update({"seeds": "{1} vs {0}".format(*seeds["runs"]), "seeds_change": seeds["value"],
                            "seeds_low": seeds["ci_low"], "seeds_high": seeds["ci_high"],
                            "seeds_verdict": verdict(seeds, higher)})
            out.append(row)
    return out


def _seed_values(rows: dict[str, dict], cfg: ResultsConfig, variant: str, metric: str) -> list[float]:
    """A metric's values over the finished seeds of one variant (the recipe's seed first)."""
    return [r["metrics"][metric]["value"] for r in seed_runs(rows, cfg, variant) if (r["metrics"].get(metric) or {}).get("value") is not None]


def seed_spread(rows: dict[str, dict], cfg: ResultsConfig) -> list[dict]:
    """Mean, standard deviation and range over seeds of each key metric for the seeded rows."""
    out = []
    for v in cfg.seed_variants:
        runs = seed_runs(rows, cfg, v)
        if not runs:
            continue
        row = {"entry": v, "seeds": ", ".join(str(r.get("seed")) for r in runs)}
        for metric, (label, _) in KEY_METRICS.items():
            vals = _seed_values(rows, cfg, v, metric)
            if vals:
                row[label] = (f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f} [{min(vals):.1f}, {max(vals):.1f}]"
                              if len(vals) > 1 else f"{vals[0]:.1f} (one seed)")
        out.append(row)
    return out


def ablation_table(planned: list[Entry], rows: dict[str, dict]) -> list[dict]:
    table = []
    for entry in planned:
        row = rows.get(entry.name)
        if row is None:
            table.append({"entry": entry.name, "what": entry.description, "params": "not run"})
            continue
        tps = row.get("train_tokens_per_s")
        table.append({"entry": entry.name, "what": entry.description, "params": f"{row['params']:,}",
                      "train tok/s": "–" if tps is None else f"{tps:.0f}",
                      **{label: with_ci(row["metrics"].get(m)) for m, (label, _) in KEY_METRICS.items()}})
    return table


def compute_table(profile: dict) -> list[dict]:
    """Per variant and batch size: tokens/s, latency and memory as ratios to base at the same batch size."""
    inf = profile["inference"]
    base = {(r["batch_size"], r["prompt_length"]): r for r in inf if r["variant"] == "base"}
    params = profile["variants"]
    out = []
    for r in inf:
        b = base.get((r["batch_size"], r["prompt_length"]))
        info = params.get(r["variant"], {})

        def ratio(key):
            return None if not b or not b.get(key) or r.get(key) is None else r[key] / b[key]
        out.append({"variant": r["variant"], "batch": r["batch_size"], "Δparams": info.get("delta_params"),
                    "Δparams %": info.get("delta_percent"), "profile train tok/s": info.get("train_tokens_per_s"),
                    "prefill tok/s": r.get("prefill_tokens_per_s"), "decode tok/s": r.get("decode_tokens_per_s"),
                    "p50 s": r.get("latency_p50_s"), "p95 s": r.get("latency_p95_s"),
                    "peak MB": r.get("peak_memory_mb"), "decode ×base": ratio("decode_tokens_per_s"),
                    "prefill ×base": ratio("prefill_tokens_per_s"), "p50 ×base": ratio("latency_p50_s"),
                    "peak mem ×base": ratio("peak_memory_mb")})
    return out


def tradeoff_figure(sweep: dict, rows: dict[str, dict], path: Path) -> Path:
    """The β front of the negotiax circuit (sweep, refusal vs over-refusal) next to every trained system."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for objective in sweep["objectives"]:
        pts = sorted((p for p in sweep["points"] if p["objective"] in (None, objective) and p["beta"] != "mute"),
                     key=lambda p: p["beta"])
        if len(pts) < 2:
            continue
        x = [100 * p["metrics"]["over_refusal_benign"]["value"] for p in pts]
        y = [100 * p["metrics"]["refusal_harmful"]["value"] for p in pts]
        line, = ax.plot(x, y, marker="o", label=f"negotiax, β_{objective} swept")
        for p, xi, yi in zip(pts, x, y):
            ax.annotate(f"{p['beta']:g}", (xi, yi), fontsize=7, textcoords="offset points", xytext=(3, 3),
                        color=line.get_color())
    for i, (name, row) in enumerate(rows.items()):
        m = row["metrics"]
        if "refusal_harmful" in m and "over_refusal_benign" in m:
            ax.scatter(m["over_refusal_benign"]["value"], m["refusal_harmful"]["value"], marker="s", s=36,
                       color=f"C{(i + 2) % 10}", zorder=3)
            ax.annotate(name, (m["over_refusal_benign"]["value"], m["refusal_harmful"]["value"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -9))
    ax.set(xlabel="over-refusal on benign AlpacaEval prompts, % (↓)", ylabel="refusal on harmful BeaverTails prompts, % (↑)",
           title="β front of one circuit vs separately trained systems (same test prompts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _change(h: dict, over_seeds: bool = False) -> dict:
    """A headline row's change with its interval, at seed 0 or over seeds, as `fmt_change` and `verdict` take it."""
    if over_seeds:
        return {"value": h["seeds_change"], "ci_low": h["seeds_low"], "ci_high": h["seeds_high"]}
    return {"value": h["change"], "ci_low": h["ci_low"], "ci_high": h["ci_high"]}


def _comparisons(heads: list[dict]) -> dict[str, str]:
    """comparison -> what the measured metrics say: those whose interval excludes 0, the rest within noise. Where
    training seeds were repeated, the seed-mean change and its seeds-and-prompts interval decide."""
    out = {}
    for comparison in dict.fromkeys(h["comparison"] for h in heads):
        rows = [h for h in heads if h["comparison"] == comparison]
        if rows[0].get("status") == "not run":
            out[comparison] = "not run yet"
            continue
        clear, noise = [], []
        for h in rows:
            seeded = "seeds_verdict" in h
            said = h["seeds_verdict"] if seeded else h["verdict"]
            runs = f", seed means over {h['seeds']} runs" if seeded else ", one run each"
            if said in ("better", "worse"):
                clear.append(f"{h['metric']} {fmt_change(_change(h, seeded))} ({said}{runs})")
            else:
                noise.append(h["metric"])
        text = ("clear differences: " + "; ".join(clear)) if clear else "no clear difference on any key metric"
        seeded = [h["seeds"] for h in rows if "seeds" in h]
        where = f" (seed means over {seeded[0]} runs)" if seeded and not clear else ""
        out[comparison] = text + where + ("; within noise: " + ", ".join(noise) if clear and noise else "")
    return out


def in_short(heads: list[dict]) -> list[str]:
    """One generated line per headline comparison."""
    what = {h["comparison"]: h["what"] for h in heads}
    return [f"- **{c}**: {text}." if text == "not run yet" else f"- **{c}** ({what[c]}): {text}."
            for c, text in _comparisons(heads).items()]


def summary_lines(heads: list[dict]) -> list[str]:
    """Three lines for the main README: against naive fusion, against LoRA SFT, and the two ablations."""
    said = _comparisons(heads)

    def body(comparison):
        return said.get(comparison, "not run yet")
    return [f"- NegotiaX vs naive fusion (`pathways`): {body('negotiax vs pathways')}.",
            f"- NegotiaX vs LoRA SFT (`sft-lora`): {body('negotiax vs sft-lora')}.",
            f"- Without axis embeddings (A1): {body('negotiax vs A1')}; with a frozen negotiation (A2): "
            f"{body('negotiax vs A2')}."]


def copy_summary(summary: Path, readme: Path) -> None:
    """Put summary.md between the README's two marker lines (an error names the file if they are missing)."""
    text = readme.read_text()
    if SUMMARY_START not in text or SUMMARY_END not in text:
        raise ValueError(f"{readme}: no '{SUMMARY_START}' ... '{SUMMARY_END}' block to put the summary in; "
                         "add the two lines or unset summary_readme")
    head, rest = text.split(SUMMARY_START, 1)
    _write_text(readme, head + SUMMARY_START + "\n" + summary.read_text().strip() + "\n" + SUMMARY_END
                      + rest.split(SUMMARY_END, 1)[1])


def _seed_range_sentence(rows: dict[str, dict], cfg: ResultsConfig) -> str:
    """How far one system's refusal moves between training seeds: the scale against which differences between
    systems (whose intervals above cover the sampling of prompts only) should be read."""
    ranges = {}
    for v in cfg.seed_variants:
        vals = _seed_values(rows, cfg, v, "refusal_harmful")
        if len(vals) > 1:
            ranges[v] = max(vals) - min(vals)
    if not ranges:
        return ""
    parts = ", ".join(f"{v} {r:.0f}" for v, r in ranges.items())
    return (f"Refusal on harmful prompts moves by this many points between training seeds of one system: {parts}. "
            "The intervals of the ablation table cover the sampling of test prompts only, not the training seed, so "
            "a difference between two single runs smaller than this is not evidence that one is better; the "
            "headline's `over seeds` intervals include it.")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _table(rows: list[dict], columns: list[str]) -> str:
    return markdown_table(columns, cells(rows, columns)) + "\n"


def write_docs(cfg: ResultsConfig, revision: str | None = None) -> Path:
    """docs_dir/: ablation, seeds, headline and compute tables (.md + .csv), the figures, and README.md.
    `revision`: the checkout's commit as it was when the command started (default: now)."""
    revision = revision or _git_revision()
    docs = Path(cfg.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    run = Path(cfg.output_dir)
    ablation = read_json(run / "ablate" / "ablation.json") or {"entries": []}
    rows = {r["name"]: r for r in ablation["entries"]}
    planned = entries(cfg)
    table = ablation_table(planned, rows)
    write_csv(table, ABLATION_COLS, docs / "ablation.csv")
    heads = headline(rows, cfg)
    head_cols = ["comparison", "metric", "before", "after", "change", "ci_low", "ci_high", "n", "verdict",
                 "seeds", "seeds_change", "seeds_low", "seeds_high", "seeds_verdict"]
    write_csv([h for h in heads if "metric" in h], head_cols, docs / "headline.csv")
    spread = seed_spread(rows, cfg)
    if spread:
        write_csv(spread, SEED_COLS, docs / "seeds.csv")
    if (run / "ablate" / "ablation.png").is_file():
        shutil.copy(run / "ablate" / "ablation.png", docs / "ablation.png")
    profile = read_json(run / "profile" / "profile.json")
    compute = compute_table(profile) if profile else []
    if compute:
        write_csv(compute, list(compute[0]), docs / "compute.csv")
    sweep = read_json(run / "sweep" / "sweep.json")
    figures = []
    if sweep:
        figures.append(tradeoff_figure(sweep, rows, docs / "tradeoff.png").name)
        shutil.copy(run / "sweep" / "sweep.png", docs / "sweep.png")
        figures.append("sweep.png")
    interp = read_json(run / "interpret" / "interpret.json")
    for name in (interp or {}).get("figures", {}):
        src = run / "interpret" / f"{name}.png"
        if src.is_file():
            shutil.copy(src, docs / f"interpret_{name}.png")
            figures.append(f"interpret_{name}.png")
    lines = _readme(cfg, revision, ablation, rows, planned, table, heads, spread, compute, interp, figures)
    path = docs / "README.md"
    _write_text(path, "\n".join(lines) + "\n")
    _write_text(docs / "summary.md", "\n".join(summary_lines(heads)) + "\n")
    if cfg.summary_readme:
        copy_summary(docs / "summary.md", Path(cfg.summary_readme))
    write_json(docs / "results.json", clean({"headline": heads, "seeds": spread, "compute": compute}))
    log.info("wrote %s", path)
    return path


def _work(run: Path) -> list[dict]:
    return read_jsonl(run / "wall.jsonl")


def _wall(run: Path) -> float:
    """Seconds spent on the run over all its invocations (wall.jsonl)."""
    return sum(w["wall_s"] for w in _work(run))


def _revisions(run: Path) -> str:
    """The commits that did the run's work, with the minutes each spent (from wall.jsonl)."""
    seconds: dict[str, float] = {}
    for w in _work(run):
        rev = (w.get("git_revision") or "")[:7] or "not recorded"
        seconds[rev] = seconds.get(rev, 0.0) + w["wall_s"]
    return ", ".join(f"`{rev}` ({s / 60:.0f} min)" for rev, s in seconds.items()) or "none yet"


def _readme(cfg, revision, ablation, rows, planned, table, heads, spread, compute, interp, figures) -> list[str]:
    run = Path(cfg.output_dir)
    not_run = [e.name for e in planned if e.name not in rows]
    tests = ablation.get("test_sets", {})
    model = load_recipe(cfg.recipe, list(cfg.recipe_overrides)).model
    lines = [f"# Results: `{model.name_or_path}` on {model.device}", "",
             f"Written by `negotiax results -c <config>` (recipe `{cfg.recipe}`"
             + (f", overrides {cfg.recipe_overrides}" if cfg.recipe_overrides else "") + f") at commit "
             f"`{revision}` on {datetime.date.today().isoformat()}; the measured wall time adds up to "
             f"{_wall(run) / 60:.0f} minutes over all invocations (`wall.jsonl`; by the commit that ran it: "
             f"{_revisions(run)}). Test prompts: "
             + ", ".join(f"{n} {k}" for k, n in tests.items()) + " (held out; never used for training or tuning). "
             "Every number below is read from the run's files; intervals are 95% bootstrap intervals over prompts (the "
             "headline's `over seeds` column: over training seeds and prompts).", ""]
    if not_run:
        lines += [f"**Not run yet ({len(not_run)} of {len(planned)} grid entries):** {', '.join(not_run)}. "
                  "Re-running the command resumes the grid; these rows are left empty, not estimated.", ""]
    lines += ["## In short", ""] + in_short(heads) + [""]
    lines += ["## Headline comparisons", "",
              "Paired changes (row − reference, on the same prompts) at the recipe's seed: `change` and `verdict`. "
              "Where a system was trained with several seeds, `over seeds` is the change of the seed means, with an "
              "interval that resamples the training seeds and the prompts together (`runs`: row vs reference; a "
              "reference trained once, such as A1 or A2, brings no seed noise of its own into it, base has none); "
              "its verdict is the one to read, since the seed-0 interval ignores training noise. *No clear change* "
              "means the interval contains 0: the difference is within noise at this test size.", ""]
    measured = [h for h in heads if "metric" in h]
    if measured:
        fmt_rows = [{**h, "before": f"{h['before']:.1f}", "after": f"{h['after']:.1f}", "change": fmt_change(_change(h)),
                     "runs": h.get("seeds", "1 vs 1"),
                     "over seeds": fmt_change(_change(h, over_seeds=True)) if "seeds" in h else "–",
                     "verdict over seeds": h.get("seeds_verdict", "–")}
                    for h in measured]
        lines.append(_table(fmt_rows, ["comparison", "metric", "before", "after", "change", "verdict", "runs",
                                       "over seeds", "verdict over seeds"]))
    for h in heads:
        if h.get("status") == "not run":
            lines.append(f"- {h['comparison']} ({h['what']}): not run yet.")
    lines += ["", "## Ablation table", "", "Each cell: value [95% interval]; rates in %. `params`: trainable "
              "parameters; `train tok/s`: training throughput of the entry's own run (machine load varies between "
              "runs; `negotiax profile` below and `benchmarks/bench_train.py` compare speeds in one process). Same "
              "data, steps and test prompts for every row, and the recipe's seed unless the entry says `sN`. Also in `ablation.csv`; the bar chart is `ablation.png`.", ""]
    lines.append(_table(table, ABLATION_COLS))
    if spread:
        lines += ["## Seeds", "", "Mean ± standard deviation [min, max] over the seeds listed. "
                  + _seed_range_sentence(rows, cfg), ""]
        lines.append(_table(spread, SEED_COLS))
    if compute:
        lines += ["## Compute", "", "`negotiax profile` with the grid's trained circuits: tokens/s, latency and "
                  "peak memory, and their ratios to the base model at the same batch size (`compute.csv`).", ""]
        cols_c = ["variant", "batch", "Δparams", "profile train tok/s", "prefill tok/s", "decode tok/s", "p50 s", "p95 s",
                  "peak MB", "decode ×base", "p50 ×base", "peak mem ×base"]
        lines.append(_table(compute, cols_c))
        lines += [""] + _training_speeds(compute)
    if figures:
        lines += ["## Figures", ""]
        captions = {"tradeoff.png": "β front of the negotiax circuit next to the separately trained systems",
                    "sweep.png": "the β sweep: trade-off plane, MC2 and reference NLL against β"}
        for f in figures:
            lines += [f"![{f}]({f})", "", f"*{captions.get(f, f.removeprefix('interpret_').removesuffix('.png').replace('_', ' '))}*", ""]
    if interp and "blind_spots" in interp:
        lines += _blind_spots(interp["blind_spots"])
    return lines


def _training_speeds(compute: list[dict]) -> list[str]:
    """One sentence: each variant's training tokens/s in the profile (one process, same batches), as a ratio
    to sft-lora's when it was profiled. `sft-lora` decodes its adapter unmerged; merged it costs what base does."""
    speeds = {r["variant"]: r["profile train tok/s"] for r in compute if r.get("profile train tok/s")}
    if not speeds:
        return []
    lora = speeds.get("sft-lora")
    parts = [f"{v} {t:.0f}" + (f" ({t / lora:.2f}× sft-lora)" if lora and v != "sft-lora" else "")
             for v, t in speeds.items()]
    return [f"Training tokens/s measured by the profile in one process on the same synthetic batches: "
            f"{'; '.join(parts)}." + (" `sft-lora` is decoded with its adapter unmerged (merged into the weights "
                                      "it costs exactly what base costs)." if lora else ""), ""]


def _blind_spots(blind: dict) -> list[str]:
    lines = ["## Blind spots", "", "Prompts whose decision-position α peaks on another objective than their prompt "
             "type's (`negotiax interpret`); the examples are the three with the least α on the expected objective.", ""]
    for group, info in blind.items():
        rate = info.get("misrouted_rate")
        if rate is None:
            continue
        lines.append(f"- **{group}** (expected `{info.get('expected')}`): {100 * rate:.0f}% of {info.get('n')} "
                     "prompts routed elsewhere.")
        for item in (info.get("misrouted") or [])[:3]:
            prompt = str(item.get("prompt", ""))[:110].replace("\n", " ")
            alpha = ", ".join(f"{k} {v:.2f}" for k, v in item.get("alpha", {}).items())
            lines.append(f"  - → `{item.get('routed_to')}` (α: {alpha}): “{prompt}”")
    return lines + [""]
