"""`negotiax ablate`: a grid of variants and ablations, each trained and evaluated the same way.

Every entry is the base recipe with a few circuit settings changed, trained with `train_from_recipe`
(resumable: a finished run is reused) into <output_dir>/<name>, then generated and scored with
`negotiax.generation.generate` and `negotiax.evaluation.evaluate` on the recipe's test sets. `base` needs no
training; `branched` decodes with the pathways circuit of the `pathways` entry (or trains its own with
`branched_source: own`: the trainer then fits pathway o on objective o's batches alone) and is scored with
the preference-combined log-probs (`BranchedLM`). `sft-lora` is the baseline users would pick instead: no
circuit, LoRA on the backbone (the recipe's train.sft_lora), the same data, steps and batches. Every row
carries its trainable parameters and training tokens/s. Output: ablation.{md,csv,json} and ablation.png.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from ..backbone import load_backbone
from ..data import load_test_sets
from ..io import markdown_table, pyplot, save_figure, write_json
from ..pipeline import evaluate_system, sft_lora_recipe, train_from_recipe, train_summary, with_lora
from ..recipe import Recipe, load_recipe
from ..saving import load_circuit
from .common import cells, clean, jsonable, write_csv

log = logging.getLogger(__name__)

PAIRS = {"help+harm": ["helpful", "harmless"], "help+honest": ["helpful", "honest"],
         "harm+honest": ["harmless", "honest"]}
# name -> circuit settings changed from the recipe (A3 expands to one entry per pair).
VARIANTS = {
    "base": {"variant": "base"},
    "pathways": {"variant": "pathways"},
    "branched": {"variant": "branched"},
    "mac": {"variant": "mac"},
    "negotiax": {"variant": "negotiax"},
    "A1": {"variant": "negotiax", "generic": True},
    "A2": {"variant": "negotiax", "frozen": True},
    "sft-lora": {"variant": "base"},  # no circuit: LoRA on the backbone (the recipe's train.sft_lora)
}
SFT_LORA = "sft-lora"
DESCRIPTIONS = {"base": "no circuit", "pathways": "Module I, uniform fusion", "branched": "Module I, decode-time branches",
                "mac": "Module II, no objective supervision", "negotiax": "full method",
                "A1": "A1 generic (no axis embeddings, no routing loss)", "A2": "A2 frozen W_q/W_k/W_v",
                SFT_LORA: "LoRA SFT on the backbone, same data and steps"}


@dataclass
class AblateConfig:
    """The grid and the recipe every entry starts from."""

    recipe: str | None = None  # base recipe YAML (configs/quick.yaml for a CPU run)
    recipe_overrides: list[str] = field(default_factory=list)  # key=value applied to every entry's recipe
    variants: list[str] = field(default_factory=lambda: ["base", "pathways", "branched", "mac", "negotiax",
                                                         "A1", "A2", "A3"])
    layers_sweep: list[int] = field(default_factory=list)  # extra negotiax entries, one per injection layer
    ranks_sweep: list[int] = field(default_factory=list)  # extra negotiax entries, one per pathway rank
    branched_source: str = "pathways"  # pathways: reuse the pathways entry's circuit; own: train a branched one
    output_dir: str = "runs/ablate"

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS and v != "A3"]
        if bad or not self.variants:
            raise ValueError(f"variants={self.variants}: choose from {', '.join([*VARIANTS, 'A3'])}")
        if self.branched_source not in ("pathways", "own"):
            raise ValueError(f"branched_source={self.branched_source!r}: choose pathways or own")


@dataclass
class Entry:
    name: str
    description: str
    circuit: dict  # circuit settings changed from the recipe
    seed: int | None = None  # None: the recipe's seed
    kind: str = ""  # the variant this entry repeats (e.g. "sft-lora" for "sft-lora s1"); default: the name

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name


def grid(cfg: AblateConfig) -> list[Entry]:
    """The entries to run, in order; `branched` (from pathways) comes after `pathways`."""
    entries = []
    for v in cfg.variants:
        if v == "A3":
            entries += [Entry(f"A3 {p}", f"A3 trained on {' + '.join(objs)}", {"variant": "negotiax", "objectives": objs})
                        for p, objs in PAIRS.items()]
        else:
            entries.append(Entry(v, DESCRIPTIONS[v], dict(VARIANTS[v])))
    entries += [Entry(f"negotiax L{layer}", f"negotiax at layer {layer}", {"variant": "negotiax", "layers": [layer]})
                for layer in cfg.layers_sweep]
    entries += [Entry(f"negotiax r{r}", f"negotiax, rank {r}", {"variant": "negotiax", "rank": r, "head_dim": r})
                for r in cfg.ranks_sweep]
    names = [e.name for e in entries]
    if cfg.branched_source == "pathways" and "branched" in names:
        if "pathways" not in names:  # branched decodes with the pathways entry's circuit
            entries.insert(names.index("branched"), Entry("pathways", DESCRIPTIONS["pathways"], dict(VARIANTS["pathways"])))
        elif names.index("pathways") > names.index("branched"):
            entries.insert(names.index("branched"), entries.pop(names.index("pathways")))
    return entries


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("+", "-"))


def entry_recipe(base: Recipe, entry: Entry, out_dir: Path) -> Recipe:
    seed = base.seed if entry.seed is None else entry.seed
    if entry.kind == SFT_LORA:
        return dataclasses.replace(sft_lora_recipe(base), name=f"{base.name}-{slug(entry.name)}",
                                   output_dir=str(out_dir / slug(entry.name)), seed=seed)
    circuit = base.circuit.derived(**entry.circuit)
    return dataclasses.replace(base, circuit=circuit, name=f"{base.name}-{slug(entry.name)}",
                               output_dir=str(out_dir / slug(entry.name)), seed=seed)


def seed_name(variant: str, seed: int | None) -> str:
    """The grid entry of `variant` at another seed ("negotiax s1"); the plain name at the recipe's seed."""
    return variant if seed is None else f"{variant} s{seed}"


def _circuit_dir(entry: Entry, recipe: Recipe, cfg: AblateConfig) -> Path | None:
    if entry.circuit["variant"] == "base":  # base, and sft-lora (LoRA weights, no circuit)
        return None
    if entry.kind == "branched" and cfg.branched_source == "pathways":  # the pathways entry of the same seed
        return Path(cfg.output_dir) / slug(seed_name("pathways", entry.seed)) / "circuit"
    return Path(recipe.output_dir) / "circuit"


def run_entry(model, tokenizer, entry: Entry, recipe: Recipe, cfg: AblateConfig, tests: dict) -> dict:
    """Train (unless base / reused branched), then generate and evaluate one entry; reuses finished results."""
    run_dir = Path(recipe.output_dir)
    circuit_dir = _circuit_dir(entry, recipe, cfg)
    needs_training = (circuit_dir is not None or entry.kind == SFT_LORA) and \
        not (entry.kind == "branched" and cfg.branched_source == "pathways")
    if needs_training:
        train_from_recipe(recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    if circuit_dir is not None and not (circuit_dir / "circuit.json").is_file():
        raise FileNotFoundError(f"{circuit_dir}: no trained circuit for {entry.name!r}; "
                                "run the pathways entry first or set branched_source=own")
    attachment = load_circuit(circuit_dir, model) if circuit_dir is not None else None
    # sft-lora decodes with its adapter on a copy of the backbone: the shared one stays unchanged.
    entry_model = with_lora(load_backbone(recipe.model)[0], run_dir) if entry.kind == SFT_LORA else model
    try:  # finished generations and results are reused only when their fingerprints match (negotiax.fingerprint)
        _, results = evaluate_system(entry_model, tokenizer, tests, recipe.generate, recipe.eval,
                                     run_dir / "generations.jsonl", run_dir / "eval", attachment=attachment,
                                     branched=entry.circuit["variant"] == "branched", score_rows=True)
    finally:
        if attachment is not None:
            attachment.detach()
    summary = train_summary(run_dir if entry.kind == SFT_LORA or circuit_dir is None else circuit_dir.parent)
    return {"name": entry.name, "description": entry.description, "circuit": entry.circuit, "seed": recipe.seed,
            "circuit_dir": str(circuit_dir) if circuit_dir else None,
            "params": summary.get("trainable_parameters") or _params(circuit_dir),
            "train_tokens_per_s": (summary.get("throughput") or {}).get("tokens_per_s"),
            "metrics": results["metrics"], "run_dir": str(run_dir)}


def _params(circuit_dir: Path | None) -> int:
    """Parameters of a saved circuit, read from the safetensors header (0 for the base model)."""
    if circuit_dir is None:
        return 0
    total = 0
    with safe_open(str(circuit_dir / "circuit.safetensors"), "pt") as f:
        for key in f.keys():
            n = 1
            for size in f.get_slice(key).get_shape():
                n *= int(size)
            total += n
    return total


def ablate(cfg: AblateConfig, model=None, tokenizer=None, entries: list[Entry] | None = None,
           on_entry: Callable[[Entry, float], None] | None = None) -> dict:
    """Run the grid (or the given `entries`); returns {entries: [...], metrics: [...]}. The table and plot are
    rewritten after every entry, so an interrupted grid keeps its finished rows; `on_entry(entry, seconds)`
    is called after each."""
    overrides = list(cfg.recipe_overrides)
    base = load_recipe(cfg.recipe, overrides)
    if base.train.lora:
        raise ValueError("ablate compares circuits on a frozen backbone; set train.lora=false in the recipe")
    out = Path(cfg.output_dir)
    if model is None:
        model, tokenizer = load_backbone(base.model)
    tests = load_test_sets(base.data)
    done: list[dict] = []
    for entry in entries if entries is not None else grid(cfg):
        start = time.perf_counter()
        log.info("ablation entry %s (%s)", entry.name, entry.description)
        done.append(run_entry(model, tokenizer, entry, entry_recipe(base, entry, out), cfg, tests))
        if on_entry is not None:
            on_entry(entry, time.perf_counter() - start)
        result = clean({"recipe": cfg.recipe, "recipe_overrides": overrides, "entries": done,
                        "metrics": metric_names(done), "test_sets": {k: len(v) for k, v in tests.items()}})
        write_outputs(result, out)
    return result


def metric_names(entries: list[dict]) -> list[str]:
    names: list[str] = []
    for e in entries:
        names += [m for m, v in e["metrics"].items() if isinstance(v, dict) and "value" in v and m not in names]
    return names


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def _cell(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "–"
    lo, hi = m.get("ci_low"), m.get("ci_high")
    ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.3g}{ci} (n={m.get('n')})"


def write_outputs(result: dict, out: Path) -> None:
    """ablation.md (value [95% CI] (n)), ablation.csv (value, ci_low, ci_high, n per metric), .json, .png."""
    metrics = result["metrics"]
    rows = [{"entry": e["name"], "what": e["description"], "params": e["params"],
             "train tok/s": _rate(e.get("train_tokens_per_s")),
             **{m: _cell(e["metrics"].get(m)) for m in metrics}} for e in result["entries"]]
    out.mkdir(parents=True, exist_ok=True)
    columns = ["entry", "what", "params", "train tok/s", *metrics]
    (out / "ablation.md").write_text("# Ablation\n\nEach cell: value [95% bootstrap interval] (n).\n\n"
                                     + markdown_table(columns, cells(rows, columns)) + "\n")
    flat = []
    for e in result["entries"]:
        row = {"entry": e["name"], "params": e["params"], "train_tokens_per_s": e.get("train_tokens_per_s")}
        for m in metrics:
            v = e["metrics"].get(m) or {}
            row.update({m: v.get("value"), f"{m}_ci_low": v.get("ci_low"), f"{m}_ci_high": v.get("ci_high"),
                        f"{m}_n": v.get("n")})
        flat.append(row)
    cols = ["entry", "params", "train_tokens_per_s"] + [c for m in metrics for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_n")]
    write_csv(flat, cols, out / "ablation.csv")
    result["figure"] = str(plot_ablation(result, out / "ablation.png"))
    write_json(out / "ablation.json", result, default=jsonable, allow_nan=False)


def plot_ablation(result: dict, path: Path) -> Path:
    plt = pyplot()
    metrics = result["metrics"]
    names = [e["name"] for e in result["entries"]]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.6 * max(len(metrics), 1), 0.35 * len(names) + 2),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        vals, err = [], [[], []]
        for e in result["entries"]:
            v = e["metrics"].get(m) or {}
            x = v.get("value")
            vals.append(float("nan") if x is None else x)
            err[0].append(0 if x is None or v.get("ci_low") is None else x - v["ci_low"])
            err[1].append(0 if x is None or v.get("ci_high") is None else v["ci_high"] - x)
        ax.barh(range(len(names)), vals, xerr=err, capsize=3, color=[f"C{i % 10}" for i in range(len(names))])
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(m, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("variants and ablations (95% bootstrap intervals)", fontsize=11)
    return save_figure(fig, path)
