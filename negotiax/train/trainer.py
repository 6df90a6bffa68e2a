"""The training loop on Hugging Face Accelerate: one batch per objective per micro-step.

`Trainer` knows nothing about files of data: it takes a step source, an iterator that yields
{objective: {input_ids, attention_mask, labels}} per micro-step and has state_dict()/load_state_dict()
so a resumed run continues with exactly the batches an uninterrupted one would have seen.
The same code runs on one CPU and under `accelerate launch` (DDP, FSDP, DeepSpeed).
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from ..attach import Attachment
from ..backbone import logits_at
from ..io import read_json, replace_dir, write_json
from ..saving import save_circuit
from .checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import ce_labels, prediction_mask, response_ce
from .module import CircuitTrainModule
from .schedule import make_scheduler
from .tracker import MetricsLogger

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
SUMMARY = "train_summary.json"
WARM_START = "warm_start.json"  # what the warm start (e.g. the routing fit) did, when there was one


class StepSource(Protocol):
    def __iter__(self) -> Iterator[dict[str, Batch]]: ...
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> None: ...


class NonFiniteLossError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite; the run stopped without saving."""


def resolve_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Trainer:
    """Trains the circuit (and LoRA weights, if the backbone has trainable parameters).

    With `attachment=None` there is no circuit: the backbone's trainable weights (LoRA) learn the
    response CE alone — the `sft-lora` baseline, on the same batches, schedule and checkpoints."""

    def __init__(self, backbone: nn.Module, attachment: Attachment | None, cfg: TrainConfig, source: StepSource,
                 run_dir: str | Path, *, seed: int = 0, eval_batches: dict[str, list[Batch]] | None = None,
                 callbacks: list[Callable[["Trainer", int], None]] | None = None,
                 accelerator: Accelerator | None = None, config_record: dict | None = None,
                 loss_weights: dict[str, float] | None = None, objectives: list[str] | None = None,
                 warm_start: Callable[[], dict] | None = None) -> None:
        if attachment is not None and not attachment.circuit.cfg.has_circuit:
            raise ValueError("circuit.variant=base has no circuit, so there is nothing to train")
        if attachment is None and not objectives:
            raise ValueError("training without a circuit needs the list of objectives")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.source = source
        self.eval_batches = eval_batches or {}
        self.callbacks = list(callbacks or [])
        self.config_record = config_record or {}
        self.circuit = attachment.circuit if attachment is not None else None
        self.objectives = list(objectives or self.circuit.objectives)
        # Per-objective loss weights (the data mixture's weights, normalised to mean 1); missing ones are 1.
        unknown = set(loss_weights or {}) - set(self.objectives)
        if unknown:
            raise ValueError(f"loss weights for {sorted(unknown)}, which this run does not train "
                             f"(objectives: {self.objectives})")
        self.loss_weights = {o: float((loss_weights or {}).get(o, 1.0)) for o in self.objectives}
        self.backbone = backbone
        self.accelerator = accelerator or Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision))
        # A warm start (e.g. the routing fit) runs once, before the first step: before `prepare`, so DDP, FSDP and
        # DeepSpeed take its weights from here (DDP broadcasts rank 0's); a checkpoint already holds its effect.
        self.warm_start_record = None
        if warm_start is not None and latest_checkpoint(self.checkpoint_dir) is None:
            self.warm_start_record = warm_start()
        self.module = CircuitTrainModule(backbone, attachment, cfg)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: no trainable circuit parameter and train.lora is off")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
        # A 4-bit backbone is already placed by its device_map and cannot be moved; its circuit went to the
        # layer's device when it was attached.
        place = not getattr(backbone, "is_loaded_in_4bit", False)
        self.module, self.optimizer = self.accelerator.prepare(self.module, optimizer, device_placement=[place, place])
        # Stepped once per optimiser step ourselves: accelerate's scheduler wrapper rescales by process count.
        self.scheduler = make_scheduler(optimizer, cfg)
        self.params = params
        self.step = 0
        self.throughput: dict | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def resume(self) -> int:
        """Load the newest valid checkpoint of this run, if any; returns the step it resumes from."""
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return 0
        meta = load_checkpoint(path, circuit=self.circuit, backbone=self.backbone,
                               optimizer=self.optimizer, scheduler=self.scheduler)
        self.source.load_state_dict(meta["sampler"])
        self.step = int(meta["step"])
        log.info("resumed from %s (step %d of %d)", path, self.step, self.cfg.steps)
        return self.step

    def train(self) -> dict:
        """Run to `cfg.steps`, resuming from the last checkpoint; returns the summary written to the run dir."""
        set_seed(self.seed)
        self.resume()
        if self.warm_start_record is not None and self.is_main:
            write_json(self.run_dir / WARM_START, self.warm_start_record, default=None)
        metrics = MetricsLogger(self.run_dir, self.cfg.report_to, self.step, self.config_record,
                                enabled=self.is_main)
        before = self._evaluate() if self.step == 0 and self.eval_batches else None
        if before is not None:
            write_json(self.run_dir / "eval_before.json", before, default=None)
            metrics.log({"step": 0, **{f"eval/{o}/ce": v for o, v in before.items()}})
        try:
            self._loop(metrics)
            return self._finish(metrics)
        finally:
            metrics.close()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _loop(self, metrics: MetricsLogger) -> None:
        batches = iter(self.source)
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", disable=not (self.cfg.progress and self.is_main))
        started, tokens = time.perf_counter(), 0
        while self.step < self.cfg.steps:
            record, n_tokens = self._optimizer_step(batches)
            self.step += 1
            tokens += n_tokens
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                elapsed = time.perf_counter() - started
                metrics.log({"step": self.step, "lr": self.scheduler.get_last_lr()[0], **record,
                             "tokens_per_s": tokens / max(elapsed, 1e-9)})
            if self.cfg.save_every and self.step % self.cfg.save_every == 0 and self.step < self.cfg.steps:
                self._save_checkpoint()
            for callback in self.callbacks:
                callback(self, self.step)
        bar.close()
        if tokens:  # this invocation's throughput (a resumed run counts its own steps only)
            seconds = time.perf_counter() - started
            self.throughput = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9)}

    def _optimizer_step(self, batches: Iterator[dict[str, Batch]]) -> tuple[dict[str, float], int]:
        """grad_accum micro-steps of one batch per objective, then clip, step and schedule."""
        sums: dict[str, float] = defaultdict(float)
        n_tokens = 0
        accum = self.cfg.grad_accum
        for micro in range(accum):
            by_objective = next(batches)
            for j, (objective, batch) in enumerate(by_objective.items()):
                last = micro == accum - 1 and j == len(by_objective) - 1
                terms = self._backward(objective, batch, len(by_objective) * accum, sync=last)
                for name, value in terms.items():
                    sums[f"{objective}/{name}"] += value / accum
                    sums[name] += value / (accum * len(by_objective))
                n_tokens += int(batch["attention_mask"].sum())
        if self.cfg.max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            if norm is None:  # DeepSpeed clips inside its engine (gradient_clipping in its config)
                norm = 0.0
            if not torch.isfinite(torch.as_tensor(norm)):
                raise NonFiniteLossError(f"gradient norm is {float(norm)} at step {self.step + 1}; {self._last_good()}")
            sums["grad_norm"] = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return dict(sums), n_tokens

    def _backward(self, objective: str, batch: Batch, divisor: int, sync: bool) -> dict[str, float]:
        index = self.objectives.index(objective)
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        # Only the last backward of an optimiser step all-reduces gradients across processes.
        with nullcontext() if sync else self.accelerator.no_sync(self.module):
            terms = self.module(batch["input_ids"], batch["attention_mask"], batch["labels"], index,
                                batch.get("ce_rows"), batch.get("route_rows"))
            values = {name: float(t.detach()) for name, t in terms.items()}
            bad = [name for name, v in values.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.step + 1}, objective {objective!r}, terms {bad} "
                    f"({', '.join(f'{n}={values[n]}' for n in bad)}); {self._last_good()}")
            self.accelerator.backward(terms["loss"] * self.loss_weights[objective] / divisor)
        return values

    def _last_good(self) -> str:
        path = latest_checkpoint(self.checkpoint_dir)
        return f"the last good checkpoint is {path}" if path else "no checkpoint was written yet"

    def _save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            save_checkpoint(self.checkpoint_dir, self.step, circuit=self.circuit,
                            backbone=self.accelerator.unwrap_model(self.module).backbone,
                            optimizer=self.optimizer, scheduler=self.scheduler,
                            sampler_state=self.source.state_dict(), keep_last=self.cfg.keep_last)
        self.accelerator.wait_for_everyone()

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Token-weighted response cross-entropy per objective on the held-out batches."""
        module = self.accelerator.unwrap_model(self.module)
        out = {}
        for objective, batches in self.eval_batches.items():
            total, count = 0.0, 0
            for batch in batches:
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                labels = ce_labels(batch["labels"], batch.get("ce_rows"))  # answers that are learnt
                n = int((labels[:, 1:] != -100).sum())
                if n == 0:
                    continue
                with self.accelerator.autocast():  # the LM head at the answer-predicting positions only
                    logits = logits_at(module.backbone, batch["input_ids"], batch["attention_mask"],
                                       prediction_mask(labels))
                total += float(response_ce(logits, labels)) * n
                count += n
            out[objective] = total / max(count, 1)
        if module.attachment is not None:
            module.attachment.record.clear()
        return out

    def _finish(self, metrics: MetricsLogger) -> dict:
        """Final checkpoint, the trained circuit in <run>/circuit, held-out CE after, and the summary."""
        latest = latest_checkpoint(self.checkpoint_dir)
        if latest is None or latest.name != checkpoint_name(self.step):
            self._save_checkpoint()
        summary = {"steps": self.step, "finished": True,
                   "variant": self.circuit.cfg.variant if self.circuit is not None else "sft-lora",
                   "trainable_parameters": sum(p.numel() for p in self.params), "throughput": self.throughput}
        if self.eval_batches:
            summary["eval_ce_before"] = read_json(self.run_dir / "eval_before.json")
            summary["eval_ce_after"] = self._evaluate()
            metrics.log({"step": self.step, **{f"eval/{o}/ce": v for o, v in summary["eval_ce_after"].items()}})
        if self.is_main:
            self._write_final_weights()
            write_json(self.run_dir / SUMMARY, summary, default=None)
        self.accelerator.wait_for_everyone()
        return summary

    def _write_final_weights(self) -> None:
        backbone = self.accelerator.unwrap_model(self.module).backbone
        if self.circuit is not None:
            replace_dir(self.run_dir / "circuit", lambda tmp: save_circuit(self.circuit, tmp, model=backbone))
        if hasattr(backbone, "peft_config"):  # LoRA: the adapter alone, in peft's own format
            replace_dir(self.run_dir / "lora", lambda tmp: backbone.save_pretrained(str(tmp)))
