"""The whole jobs: a recipe trained, generated, evaluated and reported. The stages (data, train, generate,
evaluate, report) know nothing of recipes; this module combines them.

`train_from_recipe` trains a recipe's circuit into <output_dir>. Re-running with the same output_dir resumes
from the last checkpoint, or does nothing if the run finished; both only when the recorded training
fingerprint (train_fingerprint.json) matches the recipe's, else it stops with an error naming the changed keys
(`fresh=True` renames the old run directory aside first).

`run` is `negotiax run`, the main job. Train the circuit, generate on the test splits with the base model and
with the circuit, evaluate both with the same judges and metrics (`evaluate_system`, also used by ablate), and
write one report. Everything lands in one run directory; each stage leaves its output there, so re-running the
same command resumes (training from its last checkpoint, generation from its last finished row) and skips
finished stages. A re-run with a different recipe stops before doing anything, naming the changed keys:
`config.yaml` is written once and always describes the settings that made the run's numbers (see
negotiax.fingerprint). `--fresh` renames an existing run directory to `<dir>.old-<timestamp>` and starts over.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
import platform
import random
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import yaml
from accelerate import PartialState
from accelerate.utils import set_seed

from . import fingerprint as fp
from .attach import Attachment, attach, preference
from .backbone import load_backbone
from .config import save_config
from .data import Collator, MixtureSampler, TokenizedDataset, load_test_sets, load_train_sets
from .data.schema import Example
from .evaluation.config import EvalConfig
from .evaluation.evaluate import evaluate
from .evaluation.metrics import bootstrap_ci, refusal_rate
from .evaluation.negotiation import profiles_by_group, summarize
from .evaluation.report import write_report
from .generation.branched import BranchedLM
from .generation.config import GenerationConfig
from .generation.generate import generate, read_generations
from .io import read_json, write_json
from .recipe import Recipe
from .saving import load_circuit
from .train.backbone_setup import prepare_backbone
from .train.route_fit import warm_start_routing
from .train.steps import CollatedSteps, fixed_batches
from .train.tracker import read_metrics
from .train.trainer import SUMMARY, Trainer

log = logging.getLogger(__name__)

# The prompts of each objective's test set, named for what they are.
PROMPT_GROUPS = {"harmless": "harmful", "helpful": "benign", "honest": "honest"}
PACKAGES = ("negotiax", "torch", "transformers", "accelerate", "peft", "safetensors", "datasets", "openai")

RECORD = "train_fingerprint.json"
SECTIONS = ("seed", "model", "circuit", "data", "train")  # what decides the trained weights


def finished_summary(run_dir: Path, steps: int) -> dict | None:
    """The summary of a finished run of `steps` steps in run_dir, else None."""
    summary = train_summary(run_dir)
    return summary if summary.get("finished") and summary.get("steps") == steps else None


def train_settings(recipe: Recipe) -> dict:
    """The training fingerprint's values: model, circuit, data and train keys (less fingerprint.NEUTRAL).
    train.sft_lora configures the baseline only (sft_lora_recipe copies it into that run's train keys)."""
    return {k: v for k, v in fp.settings(asdict(recipe), SECTIONS).items() if not k.startswith("train.sft_lora.")}


def has_training_outputs(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (SUMMARY, "checkpoints", "circuit", "lora"))


def check_training(recipe: Recipe) -> bool:
    """True when output_dir holds training outputs of exactly this recipe (resume or reuse them), False when
    it holds none; SettingsChangedError when they were made with other settings."""
    run_dir = Path(recipe.output_dir)
    return fp.check(run_dir / RECORD, "training", train_settings(recipe), has_training_outputs(run_dir))


def train_from_recipe(recipe: Recipe, fresh: bool = False) -> Path:
    """Train the recipe's circuit into <output_dir>/circuit; returns the run directory.

    fresh: first rename an existing output_dir to <output_dir>.old-<timestamp> (see fingerprint.set_aside)."""
    run_dir = Path(recipe.output_dir)
    if not recipe.circuit.has_circuit and not recipe.train.lora:
        log.info("circuit.variant=base: the backbone runs alone, so there is nothing to train")
        return run_dir
    state = PartialState()  # under `accelerate launch`, only the main process renames and writes records
    if fresh and state.is_main_process:
        fp.set_aside(run_dir)
    state.wait_for_everyone()
    same = check_training(recipe)
    if same and finished_summary(run_dir, recipe.train.steps):
        log.info("%s already holds a finished %d-step run of this recipe; skipping training", run_dir,
                 recipe.train.steps)
        return run_dir
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        fp.write_record(run_dir / RECORD, "training", train_settings(recipe))
    state.wait_for_everyone()
    set_seed(recipe.seed)
    model, tokenizer = load_backbone(recipe.model)
    model = prepare_backbone(model, recipe.train)
    # circuit.variant=base with train.lora: no circuit, LoRA alone (the sft-lora baseline).
    attachment = attach(model, recipe.circuit) if recipe.circuit.has_circuit else None  # after seeding
    objectives = list(recipe.circuit.objectives)
    source, eval_batches = build_data(recipe, tokenizer, objectives)
    warm_start = None
    if attachment is not None and recipe.train.route_fit_prompts:
        # the warm start fits alpha where training supervises it: the full method (not mac, A1 generic, pathways)
        if recipe.circuit.supervises_routing:
            warm_start = partial(warm_start_routing, model, attachment, source.sampler.datasets, source.collate,
                                 recipe.train.route_fit_prompts, recipe.train.route_fit_steps,
                                 recipe.train.route_fit_lr)
        else:
            log.warning("train.route_fit_prompts=%d: circuit variant %s does not supervise its routing, so there "
                        "is no routing warm start", recipe.train.route_fit_prompts, recipe.circuit.variant)
    trainer = Trainer(model, attachment, recipe.train, source, run_dir, seed=recipe.seed,
                      eval_batches=eval_batches, config_record=asdict(recipe),
                      loss_weights=loss_weights(recipe.data.mixture_weights, objectives), objectives=objectives,
                      warm_start=warm_start)
    summary = trainer.train()
    if summary.get("eval_ce_after"):
        log.info("held-out response CE before %s after %s", summary["eval_ce_before"], summary["eval_ce_after"])
    return run_dir


def train_summary(run_dir: Path) -> dict:
    """The training summary a finished run wrote (trainable parameters, throughput, ...), or {}."""
    return read_json(Path(run_dir) / SUMMARY) or {}


def with_lora(model, run_dir: Path):
    """The backbone with the run's LoRA adapter (peft), when its training used one (<run_dir>/lora)."""
    if not (Path(run_dir) / "lora").is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(Path(run_dir) / "lora")).eval()


def sft_lora_recipe(recipe: Recipe) -> Recipe:
    """The `sft-lora` baseline of a recipe: no circuit, LoRA on the backbone (train.sft_lora), the same data,
    steps, batches, schedule and seed, trained into <output_dir>/sft-lora."""
    return replace(recipe, name=f"{recipe.name}-sft-lora", output_dir=str(Path(recipe.output_dir) / "sft-lora"),
                   circuit=recipe.circuit.derived(variant="base"), train=recipe.train.for_sft_lora())


def loss_weights(mixture: dict[str, float] | None, objectives: list[str]) -> dict[str, float]:
    """Each objective's loss weight: its mixture weight, normalised so the weights average 1 over the
    circuit's objectives (so the total loss keeps its scale); all 1 without mixture weights."""
    if not mixture:
        return {o: 1.0 for o in objectives}
    raw = {o: float(mixture.get(o, 1.0)) for o in objectives}
    mean = sum(raw.values()) / len(raw)
    return {o: w / mean for o, w in raw.items()}


def build_data(recipe: Recipe, tokenizer, objectives: list[str]):
    """Tokenized training sets of the circuit's objectives, a mixture sampler over them, held-out batches."""
    # A3 pairs: only the circuit's objectives are loaded; one without a data source is a clear error.
    data = replace(recipe.data, objectives=list(objectives),
                   mixture_weights={o: w for o, w in (recipe.data.mixture_weights or {}).items() if o in objectives}
                   or None)
    sets = load_train_sets(data)
    train, held_out = {}, {}
    for objective in objectives:
        examples, kept_out = split_holdout(list(sets[objective]), recipe.train.eval_holdout, recipe.seed)
        train[objective] = TokenizedDataset(examples, tokenizer, data.max_length, data.template, objective,
                                            objectives=objectives)
        if kept_out:
            held_out[objective] = TokenizedDataset(kept_out, tokenizer, data.max_length, data.template,
                                                   f"{objective} held out", objectives=objectives)
        log.info("objective %s: %d training examples, %d held out", objective, len(examples), len(kept_out))
    collate = Collator(tokenizer, padding_side="right")
    sampler = process_sampler(train, data.batch_size, data.mixture_weights, recipe.seed)
    eval_batches = {o: fixed_batches(list(rows), data.batch_size, collate) for o, rows in held_out.items()}
    return CollatedSteps(sampler, collate), eval_batches


def process_sampler(datasets: dict, batch_size: int, weights: dict | None, seed: int):
    """The mixture sampler of this process: under `accelerate launch`, its own slice of every step's global
    batch (batch_size per process), so the processes train on different examples."""
    state = PartialState()
    return MixtureSampler(datasets, batch_size, weights=weights, seed=seed, rank=state.process_index,
                          world_size=state.num_processes)


def split_holdout(examples: list, n: int, seed: int) -> tuple[list, list]:
    """(training, held out): n examples (at most half) picked by a seeded shuffle, the same on every restart."""
    if n == 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = set(order[:min(n, len(examples) // 2)])
    return [e for i, e in enumerate(examples) if i not in cut], [examples[i] for i in sorted(cut)]


def provenance(recipe: Recipe) -> dict:
    """What produced this run: package versions, git revision, machine."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    rev, dirty = fp.git_state()
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
        write_json(path, now)
        return
    first = read_json(path)
    later = first.pop("later_invocations", [])
    if now != first and now not in later:
        log.warning("this invocation's packages or git revision differ from the run's first; recorded in %s", path)
        write_json(path, {**first, "later_invocations": later + [now]})


def run(recipe: Recipe, fresh: bool = False) -> Path:
    """Train -> generate (base, trained, and any baselines in run.compare) -> evaluate -> report, in
    recipe.output_dir; returns the report path.

    fresh: rename an existing output_dir to <output_dir>.old-<timestamp> first, and start over."""
    if not recipe.circuit.has_circuit or recipe.circuit.decodes_by_branch:
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
        log.info("stages 2-3/4: generate and evaluate (%s)", system)
        # The preference beta steers a circuit; the other systems have none, so their decoding ignores it.
        gen_cfg = recipe.generate if system == "negotiax" else replace(recipe.generate, preference={})
        rows, results[system] = evaluate_system(system_model, tokenizer, tests, gen_cfg, recipe.eval,
                                                run_dir / "generations" / f"{system}.jsonl", run_dir / "eval" / system,
                                                attachment=attachment if system == "negotiax" else None)

    sweep = _preference_sweep(recipe, model, tokenizer, attachment, tests, results["negotiax"], run_dir) \
        if recipe.run.preference_sweep else []

    log.info("stage 4/4: report")
    alpha = {}
    if recipe.circuit.has_negotiation:
        # alpha under the preference the answers were generated with, on the circuit's own answers.
        outputs = {r["id"]: r["output"] for r in rows}
        answered = {PROMPT_GROUPS.get(o, o): [ex for ex in exs if ex.id in outputs] for o, exs in tests.items()}
        with preference(attachment, recipe.generate.preference):
            profiles = profiles_by_group(model, tokenizer, attachment,
                                         {g: [ex.prompt for ex in exs] for g, exs in answered.items()},
                                         {g: [outputs[ex.id] for ex in exs] for g, exs in answered.items()},
                                         template=recipe.generate.template, batch_size=recipe.eval.batch_size)
        expected = {PROMPT_GROUPS.get(o, o): o for o in tests}
        alpha = summarize(profiles, expected, attachment.circuit.objectives)
        write_json(run_dir / "negotiation.json", alpha)
    attachment.detach()
    systems = ["base", "negotiax", *baselines]
    training = {s: train_summary(run_dir if s == "negotiax" else Path(baselines[s].output_dir))
                for s in systems if s != "base"}
    report = _write_run_report(recipe, run_dir, {s: results[s] for s in systems}, alpha, read_metrics(run_dir),
                               training, sweep, started, started_with)
    log.info("report: %s", report)
    return report


def evaluate_system(model, tokenizer, tests: dict[str, list[Example]], generate_cfg: GenerationConfig,
                    eval_cfg: EvalConfig, gen_path: Path, out_dir: Path, attachment: Attachment | None = None,
                    branched: bool | None = None, score_rows: bool = False) -> tuple[list[dict], dict]:
    """One system's answers to every test prompt (resumable JSONL at gen_path), then their scores in out_dir;
    returns (rows, results). Finished generations and results are reused only when their fingerprints match.
    branched=True: decode with the circuit's pathways as branches, and score with the preference-combined
    log-probs (BranchedLM); None: as `generate` decides from the circuit's variant, scored by the model. score_rows: score the rows in memory rather than the file (so the results record
    no generations file; ablate's grids were scored that way)."""
    examples = [ex for objective in tests for ex in tests[objective]]
    rows = generate(model, tokenizer, examples, generate_cfg, gen_path, attachment=attachment, branched=branched)
    scorer = BranchedLM(model, attachment) if branched is True else model
    # MC/NLL run under the generation's beta.
    results = evaluate(rows if score_rows else gen_path, tests, eval_cfg, model=scorer, tokenizer=tokenizer,
                       attachment=attachment, out_dir=out_dir, decoding=generate_cfg.decoding())
    return rows, results


def load_tests(recipe: Recipe, objectives: str | None = None, limit: int | None = None) -> dict[str, list[Example]]:
    """The recipe's test sets; `objectives` (comma-separated) picks some, `limit` keeps the first N of each."""
    sets = dict(load_test_sets(recipe.data))
    if objectives:
        wanted = [o.strip() for o in objectives.split(",") if o.strip()]
        unknown = set(wanted) - set(sets)
        if unknown:
            raise ValueError(f"--objectives: unknown {sorted(unknown)}; the recipe's test sets are {sorted(sets)}")
        sets = {o: sets[o] for o in wanted}
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit={limit}: must be at least 1")
        sets = {o: exs[:limit] for o, exs in sets.items()}
    return sets


def load_system(recipe: Recipe, circuit: str | Path | None = None) -> tuple:
    """(model, tokenizer, attachment): the recipe's backbone, with the saved circuit in `circuit` attached
    (attachment None without one)."""
    model, tokenizer = load_backbone(recipe.model)
    attachment = load_circuit(circuit, model) if circuit else None
    return model, tokenizer, attachment


def _preference_sweep(recipe: Recipe, model, tokenizer, attachment, tests: dict, at_zero: dict,
                      run_dir: Path) -> list[dict]:
    """Refusal on harmful and over-refusal on benign test prompts with one objective's beta changed
    (run.preference_sweep); the recipe's own preference is the shared point."""
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
    rows = {s: {r["id"]: r for r in read_generations(run_dir / "generations" / f"{s}.jsonl")} for s in systems}
    out, seen = [], {}
    for rid, row in rows["base"].items():
        if seen.get(row["objective"], 0) >= per_objective or any(rid not in rows[s] for s in systems):
            continue
        seen[row["objective"]] = seen.get(row["objective"], 0) + 1
        out.append({"objective": row["objective"], "prompt": row["prompt"],
                    **{s: rows[s][rid]["output"] for s in systems}})
    return sorted(out, key=lambda e: e["objective"])


def _routing_note(cfg) -> str:
    if not cfg.has_negotiation:
        return ""
    if cfg.gate is None:
        return " The pathways' updates are mixed by the negotiation's weights alpha."
    return (f" Hard routing: at each token the objective with the most say acts alone when its alpha is at least "
            f"{cfg.gate:g}; below that no pathway acts.")


def _write_run_report(recipe: Recipe, run_dir: Path, results: dict, alpha: dict, train_rows: list[dict],
                      training: dict[str, dict], sweep: list[dict], started: float, now: dict) -> Path:
    systems = {s: r["metrics"] for s, r in results.items()}
    summary = training.get("negotiax", {})
    notes = [f"Backbone: {recipe.model.name_or_path}; circuit: {recipe.circuit.variant} at layers "
             f"{recipe.circuit.layers or 'middle'}, rank {recipe.circuit.rank}, head {recipe.circuit.head_dim}, "
             f"objectives {', '.join(recipe.circuit.objectives)}." + _routing_note(recipe.circuit),
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
    settings = {"circuit": asdict(recipe.circuit), "data": asdict(recipe.data), "train": asdict(recipe.train),
                "eval": asdict(recipe.eval), "run": asdict(recipe.run),
                "provenance": read_json(run_dir / "provenance.json")}
    md, _ = write_report(run_dir / "report", f"NegotiaX run: {recipe.name}", systems, train_rows=train_rows,
                         alpha=alpha, notes=notes, settings=settings, examples=_examples(run_dir, list(systems)),
                         training=training, sweep=sweep)
    write_json(run_dir / "summary.json", {
        "metrics": systems, "negotiation": alpha, "training": training, "preference_sweep": sweep, "report": str(md),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": now.get("git_revision"), "git_dirty": now.get("git_dirty")})
    return md
