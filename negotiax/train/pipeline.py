"""`train_from_recipe`: the thin glue from a recipe to the trainer (backbone, circuit, data, run dir).

Re-running with the same output_dir resumes from the last checkpoint, or does nothing if the run finished;
both only when the recorded training fingerprint (train_fingerprint.json) matches the recipe's, else it stops
with an error naming the changed keys (`fresh=True` renames the old run directory aside first).
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, replace
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed

from .. import fingerprint as fp
from ..attach import attach
from ..backbone import load_backbone
from ..recipe import Recipe
from .backbone_setup import prepare_backbone
from .steps import CollatedSteps, fixed_batches
from .trainer import SUMMARY, Trainer

log = logging.getLogger(__name__)

RECORD = "train_fingerprint.json"
SECTIONS = ("seed", "model", "circuit", "data", "train")  # what decides the trained weights


def finished_summary(run_dir: Path, steps: int) -> dict | None:
    """The summary of a finished run of `steps` steps in run_dir, else None."""
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
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
    if recipe.circuit.variant == "base" and not recipe.train.lora:
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
    attachment = attach(model, recipe.circuit) if recipe.circuit.variant != "base" else None  # after seeding
    objectives = list(recipe.circuit.objectives)
    source, eval_batches = build_data(recipe, tokenizer, objectives)
    trainer = Trainer(model, attachment, recipe.train, source, run_dir, seed=recipe.seed,
                      eval_batches=eval_batches, config_record=asdict(recipe),
                      loss_weights=loss_weights(recipe.data.mixture_weights, objectives), objectives=objectives)
    summary = trainer.train()
    if summary.get("eval_ce_after"):
        log.info("held-out response CE before %s after %s", summary["eval_ce_before"], summary["eval_ce_after"])
    return run_dir


def train_summary(run_dir: Path) -> dict:
    """The training summary a finished run wrote (trainable parameters, throughput, ...), or {}."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def with_lora(model, run_dir: Path):
    """The backbone with the run's LoRA adapter (peft), when its training used one (<run_dir>/lora)."""
    if not (Path(run_dir) / "lora").is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(Path(run_dir) / "lora")).eval()


def sft_lora_recipe(recipe: Recipe) -> Recipe:
    """The `sft-lora` baseline of a recipe: no circuit, LoRA on the backbone (train.sft_lora), the same data,
    steps, batches, schedule and seed, trained into <output_dir>/sft-lora."""
    lora = recipe.train.sft_lora
    train = replace(recipe.train, lora=True, lora_r=lora.r, lora_alpha=lora.alpha, lora_targets=list(lora.targets),
                    lr=lora.lr or recipe.train.lr)
    return replace(recipe, name=f"{recipe.name}-sft-lora", output_dir=str(Path(recipe.output_dir) / "sft-lora"),
                   circuit=replace(recipe.circuit, variant="base"), train=train)


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
    from ..data import Collator, TokenizedDataset, load_train_sets

    # A3 pairs: only the circuit's objectives are loaded; one without a data source is a clear error.
    data = replace(recipe.data, objectives=list(objectives),
                   mixture_weights={o: w for o, w in (recipe.data.mixture_weights or {}).items() if o in objectives}
                   or None)
    sets = load_train_sets(data)
    train, held_out = {}, {}
    for objective in objectives:
        examples, kept_out = split_holdout(list(sets[objective]), recipe.train.eval_holdout, recipe.seed)
        train[objective] = TokenizedDataset(examples, tokenizer, data.max_length, data.template, objective)
        if kept_out:
            held_out[objective] = TokenizedDataset(kept_out, tokenizer, data.max_length, data.template,
                                                   f"{objective} held out")
        log.info("objective %s: %d training examples, %d held out", objective, len(examples), len(kept_out))
    collate = Collator(tokenizer, padding_side="right")
    sampler = process_sampler(train, data.batch_size, data.mixture_weights, recipe.seed)
    eval_batches = {o: fixed_batches(list(rows), data.batch_size, collate) for o, rows in held_out.items()}
    return CollatedSteps(sampler, collate), eval_batches


def process_sampler(datasets: dict, batch_size: int, weights: dict | None, seed: int):
    """The mixture sampler of this process: under `accelerate launch`, its own slice of every step's global
    batch (batch_size per process), so the processes train on different examples."""
    from ..data import MixtureSampler

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
