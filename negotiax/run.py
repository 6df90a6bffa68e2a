"""`negotiax run`: the main job. Train the circuit, generate on the test splits with the base model and with
the circuit, evaluate both with the same judges and metrics, and write one report.

Everything lands in one run directory; each stage leaves its output there, so re-running the same command
resumes (training from its last checkpoint, generation from its last finished row) and skips finished stages.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

from .cli import add_recipe_arguments
from .config import save_config
from .recipe import Recipe, load_recipe

log = logging.getLogger(__name__)

SYSTEMS = ("base", "negotiax")
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


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_done(path: Path, key: str) -> dict | None:
    """The stored result of a stage if it finished with the same inputs (key), else None."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("key") == key else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def run(recipe: Recipe) -> Path:
    """Train -> generate (base and trained) -> evaluate -> report, in recipe.output_dir; returns the report path."""
    from .backbone import load_backbone
    from .data import format_prompt, load_test_sets
    from .data.records import sha256_file
    from .evaluate import evaluate
    from .generate import generate
    from .negotiation import alpha_by_group
    from .report import write_report
    from .saving import load_circuit
    from .train.metrics import read_metrics
    from .train.pipeline import train_from_recipe

    if recipe.circuit.variant in ("base", "branched"):
        raise ValueError(f"circuit.variant={recipe.circuit.variant}: `negotiax run` compares a trained circuit "
                         "with the base model; use `negotiax ablate` for base-only or branched runs")
    started = time.time()
    run_dir = Path(recipe.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(recipe, run_dir / "config.yaml")
    _write_json(run_dir / "provenance.json", provenance(recipe))

    log.info("stage 1/4: train")
    train_from_recipe(recipe)

    model, tokenizer = load_backbone(recipe.model)
    tests = load_test_sets(recipe.data)
    examples = [ex for objective in tests for ex in tests[objective]]
    log.info("test examples: %s", {k: len(v) for k, v in tests.items()})

    results, attachment = {}, None
    for system in SYSTEMS:
        if system == "negotiax":  # the same backbone object, now with the trained circuit (and LoRA) on
            model = _with_lora(model, run_dir)
            attachment = load_circuit(run_dir / "circuit", model)
        log.info("stage 2/4: generate (%s)", system)
        # The preference beta steers a circuit; the base model has none, so its decoding ignores it.
        gen_cfg = recipe.generate if attachment is not None else replace(recipe.generate, preference={})
        gen_path = run_dir / "generations" / f"{system}.jsonl"
        rows = generate(model, tokenizer, examples, gen_cfg, gen_path, attachment=attachment)
        log.info("stage 3/4: evaluate (%s)", system)
        out_dir = run_dir / "eval" / system
        key = _fingerprint(asdict(recipe.eval), asdict(gen_cfg), [r["id"] for r in rows],
                           sha256_file(gen_path))
        done = _stage_done(out_dir / "stage.json", key)
        if done is None:
            results[system] = evaluate(gen_path, tests, recipe.eval, model=model, tokenizer=tokenizer,
                                       attachment=attachment, out_dir=out_dir,
                                       decoding=gen_cfg.decoding())
            _write_json(out_dir / "stage.json", {"key": key})
        else:
            log.info("%s already evaluated; reusing %s", system, out_dir / "results.json")
            results[system] = json.loads((out_dir / "results.json").read_text())

    log.info("stage 4/4: report")
    alpha = {}
    if recipe.circuit.variant in ("mac", "negotiax"):
        groups = {f"{o} prompts": [format_prompt(tokenizer, ex.prompt, recipe.generate.template) for ex in exs]
                  for o, exs in tests.items()}
        alpha = alpha_by_group(model, tokenizer, attachment, groups, batch_size=recipe.eval.batch_size)
        _write_json(run_dir / "negotiation.json", alpha)
    attachment.detach()
    report = _write_run_report(recipe, run_dir, results, alpha, read_metrics(run_dir), started, write_report)
    log.info("report: %s", report)
    return report


def _with_lora(model, run_dir: Path):
    """The backbone with the run's LoRA adapter, when training used one (train.lora=true)."""
    if not (run_dir / "lora").is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(run_dir / "lora")).eval()


def _examples(run_dir: Path, per_objective: int = 2) -> list[dict]:
    """A few prompts with both systems' answers side by side."""
    from .generate import read_rows

    rows = {s: {r["id"]: r for r in read_rows(run_dir / "generations" / f"{s}.jsonl")} for s in SYSTEMS}
    out, seen = [], {}
    for rid, row in rows["base"].items():
        if seen.get(row["objective"], 0) >= per_objective or rid not in rows["negotiax"]:
            continue
        seen[row["objective"]] = seen.get(row["objective"], 0) + 1
        out.append({"objective": row["objective"], "prompt": row["prompt"],
                    **{s: rows[s][rid]["output"] for s in SYSTEMS}})
    return out


def _write_run_report(recipe: Recipe, run_dir: Path, results: dict, alpha: dict, train_rows: list[dict],
                      started: float, write_report) -> Path:
    systems = {s: results[s]["metrics"] for s in SYSTEMS}
    summary = json.loads((run_dir / "train_summary.json").read_text()) if (run_dir / "train_summary.json").is_file() else {}
    notes = [f"Backbone: {recipe.model.name_or_path}; circuit: {recipe.circuit.variant} at layers "
             f"{recipe.circuit.layers or 'middle'}, rank {recipe.circuit.rank}, head {recipe.circuit.head_dim}, "
             f"objectives {', '.join(recipe.circuit.objectives)}.",
             f"Training: {recipe.train.steps} steps, each with one batch per objective ({recipe.data.batch_size} "
             f"sequences per objective, mixture weights {recipe.data.mixture_weights or 'equal'}).",
             f"Decoding: {json.dumps(recipe.generate.decoding())}; template {recipe.generate.template}.",
             "Judges: " + (", ".join(f"{k}={v}" for k, v in recipe.eval.judges.items()) or
                           "none configured; offline metrics only") + ". Local-judge figures are labelled as such.",
             f"This invocation took {time.time() - started:.0f} s (stages already finished were reused)."]
    if summary.get("eval_ce_before") and summary.get("eval_ce_after"):
        notes.append("Held-out response CE before -> after training: " + ", ".join(
            f"{o} {summary['eval_ce_before'][o]:.3f} -> {summary['eval_ce_after'][o]:.3f}"
            for o in summary["eval_ce_after"]))
    settings = {"data": asdict(recipe.data), "train": asdict(recipe.train), "eval": asdict(recipe.eval),
                "provenance": json.loads((run_dir / "provenance.json").read_text())}
    md, _ = write_report(run_dir / "report", f"NegotiaX run: {recipe.name}", systems, train_rows=train_rows,
                         alpha=alpha, notes=notes, settings=settings, examples=_examples(run_dir))
    _write_json(run_dir / "summary.json", {
        "metrics": systems, "negotiation": alpha, "report": str(md),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": settings["provenance"].get("git_revision"), "git_dirty": settings["provenance"].get("git_dirty")})
    return md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    report = run(recipe)
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0
