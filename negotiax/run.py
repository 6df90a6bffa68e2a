"""`negotiax run`: the main job. Train the circuit, generate on the test splits with the base model and with
the circuit, evaluate both with the same judges and metrics, and write one report.

Everything lands in one run directory; each stage leaves its output there, so re-running the same command
resumes (training from its last checkpoint, generation from its last finished row) and skips finished stages.
A re-run with a different recipe stops before doing anything, naming the changed keys: `config.yaml` is
written once and always describes the settings that made the run's numbers (see negotiax.fingerprint).
`--fresh` renames an existing run directory to `<dir>.old-<timestamp>` and starts over.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import platform
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from . import fingerprint as fp
from .cli import add_recipe_arguments, add_fresh_argument
from .config import save_config
from .recipe import Recipe, load_recipe

log = logging.getLogger(__name__)

SYSTEMS = ("base", "negotiax")
# The prompts of each objective's test set, named for what they are.
PROMPT_GROUPS = {"harmless": "harmful", "helpful": "benign", "honest": "honest"}
PACKAGES = ("negotiax", "torch", "transformers", "accelerate", "peft", "safetensors", "datasets", "openai")


def provenance(recipe: Recipe) -> dict:
    """What produced this run: package versions, git revision, machine."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = None, None
    return {"packages": versions, "git_revision": rev, "git_dirty": dirty, "python": platform.python_version(),
            "platform": platform.platform(), "recipe_name": recipe.name}


def check_recipe(recipe: Recipe, run_dir: Path) -> None:
    """Stop if run_dir's config.yaml records other settings than `recipe` (keys in fingerprint.NEUTRAL aside)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = fp.settings(yaml.safe_load(path.read_text()) or {})
    diff = fp.changes(old, fp.settings(asdict(recipe)))
    if diff:
        raise fp.SettingsChangedError(f"{run_dir} is a run of another recipe ({path}); changed: {'; '.join(diff)}. "
                                      f"Nothing was reused or overwritten. To use the new settings, {fp.FRESH_HINT}.")


def _record_provenance(path: Path, now: dict) -> None:
    """provenance.json describes the invocation that started the run; a later one that differs is appended."""
    if not path.is_file():
        _write_json(path, now)
        return
    first = json.loads(path.read_text())
    later = first.pop("later_invocations", [])
    if now != first and now not in later:
        log.warning("this invocation's packages or git revision differ from the run's first; recorded in %s", path)
        _write_json(path, {**first, "later_invocations": later + [now]})


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def run(recipe: Recipe, fresh: bool = False) -> Path:
    """Train -> generate (base, trained, and any baselines in run.compare) -> evaluate -> report, in
    recipe.output_dir; returns the report path.

    fresh: rename an existing output_dir to <output_dir>.old-<timestamp> first, and start over."""
    from .backbone import load_backbone
    from .data import load_test_sets
    from .evaluate import evaluate
    from .generate import generate, preference
    from .negotiation import NEGOTIATING, negotiation_profile, summarize
    from .report import write_report
    from .saving import load_circuit
    from .train.metrics import read_metrics
    from .train.pipeline import sft_lora_recipe, train_from_recipe, train_summary, with_lora

    if recipe.circuit.variant in ("base", "branched"):
        raise ValueError(f"circuit.variant={recipe.circuit.variant}: `negotiax run` compares a trained circuit "
                         "with the base model; use `negotiax ablate` for base-only or branched runs")
    started = time.time()
    run_dir = Path(recipe.output_dir)
    if fresh:
        fp.set_aside(run_dir)
    check_recipe(recipe, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").is_file():
        save_config(recipe, run_dir / "config.yaml")
    started_with = provenance(recipe)  # the code this invocation runs (the report's commit)
    _record_provenance(run_dir / "provenance.json", started_with)

    log.info("stage 1/4: train")
    train_from_recipe(recipe)  # resumes or reuses only a training of exactly this recipe
    baselines = {"sft-lora": sft_lora_recipe(recipe)} if "sft-lora" in recipe.run.compare else {}
    for name, baseline in baselines.items():
        log.info("stage 1/4: train (%s)", name)
        train_from_recipe(baseline)

    model, tokenizer = load_backbone(recipe.model)
    tests = load_test_sets(recipe.data)
    examples = [ex for objective in tests for ex in tests[objective]]
    log.info("test examples: %s", {k: len(v) for k, v in tests.items()})

    results, attachment, rows = {}, None, []
    # base first (the bare backbone), then the baselines (each on its own copy), the circuit last: it
    # attaches to the same backbone object, which then stays attached for the negotiation readings.
    for system in ["base", *baselines, "negotiax"]:
        system_model = model
        if system in baselines:
            system_model = with_lora(load_backbone(recipe.model)[0], Path(baselines[system].output_dir))
        elif system == "negotiax":
            model = system_model = with_lora(model, run_dir)
            attachment = load_circuit(run_dir / "circuit", model)
        log.info("stage 2/4: generate (%s)", system)
        # The preference beta steers a circuit; the other systems have none, so their decoding ignores it.
        gen_cfg = recipe.generate if system == "negotiax" else replace(recipe.generate, preference={})
        gen_path = run_dir / "generations" / f"{system}.jsonl"
        rows = generate(system_model, tokenizer, examples, gen_cfg, gen_path,
                        attachment=attachment if system == "negotiax" else None)
        log.info("stage 3/4: evaluate (%s)", system)
        # Reused when eval/<system> holds results of the same settings; MC/NLL run under the generation's beta.
        results[system] = evaluate(gen_path, tests, recipe.eval, model=system_model, tokenizer=tokenizer,
                                   attachment=attachment if system == "negotiax" else None,
                                   out_dir=run_dir / "eval" / system, decoding=gen_cfg.decoding())

    sweep = _preference_sweep(recipe, model, tokenizer, attachment, tests, results["negotiax"], run_dir) \
        if recipe.run.preference_sweep else []

    log.info("stage 4/4: report")
    alpha = {}
    if recipe.circuit.variant in NEGOTIATING:
        # alpha under the preference the answers were generated with, on the circuit's own answers.
        outputs = {r["id"]: r["output"] for r in rows}
        profiles = {}
        with preference(attachment, recipe.generate.preference):
            for objective, exs in tests.items():
                exs = [ex for ex in exs if ex.id in outputs]
                profiles[PROMPT_GROUPS.get(objective, objective)] = negotiation_profile(
                    model, tokenizer, attachment, [ex.prompt for ex in exs], [outputs[ex.id] for ex in exs],
                    recipe.generate.template, recipe.eval.batch_size)
        expected = {PROMPT_GROUPS.get(o, o): o for o in tests}
        alpha = summarize(profiles, expected, attachment.circuit.objectives)
        _write_json(run_dir / "negotiation.json", alpha)
    attachment.detach()
    systems = ["base", "negotiax", *baselines]
    training = {s: train_summary(run_dir if s == "negotiax" else Path(baselines[s].output_dir))
                for s in systems if s != "base"}
    report = _write_run_report(recipe, run_dir, {s: results[s] for s in systems}, alpha, read_metrics(run_dir),
                               training, sweep, started, write_report, started_with)
    log.info("report: %s", report)
    return report


def _preference_sweep(recipe: Recipe, model, tokenizer, attachment, tests: dict, at_zero: dict,
                      run_dir: Path) -> list[dict]:
    """Refusal on harmful and over-refusal on benign test prompts with one objective's beta changed
    (run.preference_sweep); the recipe's own preference is the shared point."""
    from .generate import generate
    from .metrics import bootstrap_ci, refusal_rate

    prompts = [ex for o in ("harmless", "helpful") for ex in tests.get(o, [])]
    base_pref = dict(recipe.generate.preference)
    points = [{"objective": o, "beta": base_pref.get(o, 0.0), "preference": base_pref,
               **{k: at_zero["metrics"][k] for k in ("refusal_harmful", "over_refusal_benign")
                  if k in at_zero["metrics"]}} for o in recipe.run.preference_sweep]
    for objective, betas in recipe.run.preference_sweep.items():
        for beta in betas:
            pref = {**base_pref, objective: beta}
            log.info("preference sweep: %s", pref)
            cfg = replace(recipe.generate, preference=pref)
            rows = generate(model, tokenizer, prompts, cfg, run_dir / "generations" / f"negotiax.{objective}{beta:+g}.jsonl",
                            attachment=attachment)
            point = {"objective": objective, "beta": beta, "preference": pref}
            for key, o in (("refusal_harmful", "harmless"), ("over_refusal_benign", "helpful")):
                values = refusal_rate([r["output"] for r in rows if r["objective"] == o])
                if values:
                    low, high = bootstrap_ci(values, n_boot=recipe.eval.n_boot, seed=recipe.eval.seed)
                    point[key] = {"value": 100 * sum(values) / len(values), "ci_low": 100 * low,
                                  "ci_high": 100 * high, "n": len(values)}
            points.append(point)
    return sorted(points, key=lambda p: (p["objective"], p["beta"]))


def _examples(run_dir: Path, systems: list[str], per_objective: int = 3) -> list[dict]:
    """The first prompts of each objective's test set (a fixed rule), with every system's answer."""
    from .generate import read_rows

    rows = {s: {r["id"]: r for r in read_rows(run_dir / "generations" / f"{s}.jsonl")} for s in systems}
    out, seen = [], {}
    for rid, row in rows["base"].items():
        if seen.get(row["objective"], 0) >= per_objective or any(rid not in rows[s] for s in systems):
            continue
        seen[row["objective"]] = seen.get(row["objective"], 0) + 1
        out.append({"objective": row["objective"], "prompt": row["prompt"],
                    **{s: rows[s][rid]["output"] for s in systems}})
    return sorted(out, key=lambda e: e["objective"])


def _write_run_report(recipe: Recipe, run_dir: Path, results: dict, alpha: dict, train_rows: list[dict],
                      training: dict[str, dict], sweep: list[dict], started: float, write_report,
                      now: dict) -> Path:
    systems = {s: r["metrics"] for s, r in results.items()}
    summary = training.get("negotiax", {})
    notes = [f"Backbone: {recipe.model.name_or_path}; circuit: {recipe.circuit.variant} at layers "
             f"{recipe.circuit.layers or 'middle'}, rank {recipe.circuit.rank}, head {recipe.circuit.head_dim}, "
             f"objectives {', '.join(recipe.circuit.objectives)}.",
             f"Training: {recipe.train.steps} steps, each with one batch per objective ({recipe.data.batch_size} "
             f"sequences per step, split by mixture weights {recipe.data.mixture_weights or 'equal'}, which "
             "also weight each objective's loss).",
             f"Decoding: {json.dumps(recipe.generate.decoding())}; template {recipe.generate.template}.",
             "Judges: " + (", ".join(f"{k}={v}" for k, v in recipe.eval.judges.items()) or
                           "none configured; offline metrics only") + ". Local-judge figures are labelled as such.",
             f"This invocation took {time.time() - started:.0f} s (stages already finished were reused)."]
    if "sft-lora" in training:
        lora = recipe.train.sft_lora
        notes.append(f"sft-lora: LoRA r={lora.r} on {', '.join(lora.targets)} of every layer, lr "
                     f"{lora.lr or recipe.train.lr}, the same data, steps, batches and seed as the circuit.")
    if summary.get("eval_ce_before") and summary.get("eval_ce_after"):
        notes.append("Held-out response CE before -> after training: " + ", ".join(
            f"{o} {summary['eval_ce_before'][o]:.3f} -> {summary['eval_ce_after'][o]:.3f}"
            for o in summary["eval_ce_after"]))
    settings = {"data": asdict(recipe.data), "train": asdict(recipe.train), "eval": asdict(recipe.eval),
                "run": asdict(recipe.run), "provenance": json.loads((run_dir / "provenance.json").read_text())}
    md, _ = write_report(run_dir / "report", f"NegotiaX run: {recipe.name}", systems, train_rows=train_rows,
                         alpha=alpha, notes=notes, settings=settings, examples=_examples(run_dir, list(systems)),
                         training=training, sweep=sweep)
    _write_json(run_dir / "summary.json", {
        "metrics": systems, "negotiation": alpha, "training": training, "preference_sweep": sweep, "report": str(md),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": now.get("git_revision"), "git_dirty": now.get("git_dirty")})
    return md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_fresh_argument(parser, "the run directory (output_dir)")


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    report = run(recipe, fresh=args.fresh)
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0
