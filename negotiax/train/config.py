"""Training configuration (owned by the trainer): optimiser, schedule, loss weights, checkpoints, logging."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")
DRIFT_TOKENS = ("response", "all")
REPORTERS = ("tensorboard", "wandb")
FLOATS = ("lr", "weight_decay", "min_lr_ratio", "max_grad_norm", "lambda_route", "lambda_ref", "lambda_orth",
          "lambda_off", "lora_dropout", "route_fit_lr", "route_decision_share")
ROUTE_LOSSES = ("mean_alpha", "per_token")


@dataclass
class SftLoraConfig:
    """The `sft-lora` baseline: LoRA on the backbone, no circuit, trained on the same mixture, steps and
    batches as the circuit (response CE only). Size it so its trainable parameters are within 2x of the
    circuit's (the run logs both counts)."""

    r: int = 2
    alpha: int = 4
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float | None = None  # None: train.lr

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"train.sft_lora.r={self.r!r}: must be a positive integer")
        if self.lr is not None:
            self.lr = float(self.lr)
            if self.lr <= 0:
                raise ValueError(f"train.sft_lora.lr={self.lr}: must be positive (or null for train.lr)")


@dataclass
class TrainConfig:
    """Optimiser, schedule, loss weights, checkpoints.

    `steps` counts optimiser steps; each one sees `grad_accum` micro-steps, and each micro-step one batch
    per objective (batch size and mixture weights live in the data section).
    """

    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 10
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.0  # the schedule's floor, as a fraction of lr
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # None: no clipping
    mixed_precision: str = "auto"  # auto: bf16 on a GPU that supports it, else no
    # Loss weights (DESIGN.md section 3).
    lambda_route: float = 0.01
    lambda_ref: float = 1e-3
    lambda_orth: float = 1e-3
    # Off-target penalty (0: off): on a batch of objective o, the other pathways' ||z_j - h||^2 at the positions
    # that predict its answer, so each pathway learns to stay quiet on prompts that are not its own.
    lambda_off: float = 0.0
    # Teacher-forced routing: this share of each batch's sequences mixes only its objective's pathway
    # update, so each pathway learns its own objective; the negotiation learns to route from the routing
    # loss (its alpha is never forced). 0 trains through the negotiation's own mixing only. A mapping
    # objective -> share sets it per objective (objectives not named: 0): e.g. {helpful: 0, harmless: 1} trains the
    # benign rows through the negotiation's own alpha, so a pathway that pushes on them pays in their answers.
    route_forcing: float | dict = 0.0
    route_loss: str = "mean_alpha"  # mean_alpha: CE(alpha averaged over positions); per_token: mean of CE(alpha_t)
    # per_token only: this share of the routing loss is taken at the decision position (the last prompt token),
    # the rest over every position that predicts an answer token (0: all positions alike)
    route_decision_share: float = 0.0
    drift_tokens: str = "response"  # which tokens the pathway-drift term averages over: response | all
    # Routing warm start (negotiax.train.route_fit): before the first step, fit the negotiation to the decision
    # positions of this many training prompts per objective (0: off), full batch, route_fit_steps Adam steps.
    route_fit_prompts: int = 0
    route_fit_steps: int = 50
    route_fit_lr: float = 0.01
    # Backbone options.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None  # None: every attention and MLP linear ("all-linear")
    gradient_checkpointing: bool = False
    # Checkpoints, evaluation, logging.
    save_every: int = 100  # 0: only at the end
    keep_last: int = 2
    eval_holdout: int = 0  # examples per objective held out of training; their response CE is logged before/after
    log_every: int = 10
    report_to: list[str] = field(default_factory=list)  # tensorboard, wandb (when installed)
    progress: bool = True  # tqdm bar
    sft_lora: SftLoraConfig = field(default_factory=SftLoraConfig)  # the LoRA SFT baseline's settings

    def forcing_shares(self, objectives: list[str]) -> list[float]:
        """train.route_forcing as one share per objective, in order; an objective the mapping does not name: 0."""
        forcing = self.route_forcing
        return [float(forcing.get(o, 0.0)) if isinstance(forcing, dict) else float(forcing) for o in objectives]

    def for_sft_lora(self) -> TrainConfig:
        """These settings as the `sft-lora` baseline trains: LoRA on the backbone, sized by `sft_lora`, at its
        learning rate (train.lr when it has none)."""
        s = self.sft_lora
        off = TrainConfig()  # no circuit, so no routing to warm-start or supervise: those keys at their off values
        return replace(self, lora=True, lora_r=s.r, lora_alpha=s.alpha, lora_targets=list(s.targets),
                       lr=s.lr or self.lr, route_fit_prompts=off.route_fit_prompts,
                       route_fit_steps=off.route_fit_steps, route_fit_lr=off.route_fit_lr,
                       route_decision_share=off.route_decision_share, lambda_off=off.lambda_off)

    def __post_init__(self) -> None:
        for name in FLOATS:  # YAML reads 1e-3 (no dot) as a string
            value = getattr(self, name)
            try:
                setattr(self, name, float(value) if value is not None else None)
            except (TypeError, ValueError):
                raise ValueError(f"train.{name}={value!r}: expected a number") from None
        _positive("steps", self.steps)
        _positive("grad_accum", self.grad_accum)
        _positive("keep_last", self.keep_last)
        _positive("log_every", self.log_every)
        _positive("lora_r", self.lora_r)
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr}: must be positive")
        if self.route_fit_lr <= 0:
            raise ValueError(f"train.route_fit_lr={self.route_fit_lr}: must be positive")
        for name in ("warmup_steps", "save_every", "eval_holdout", "route_fit_prompts", "route_fit_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be 0 or more")
        for name in ("lambda_route", "lambda_ref", "lambda_orth", "lambda_off", "weight_decay", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be 0 or more")
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("drift_tokens", self.drift_tokens, DRIFT_TOKENS)
        _choice("route_loss", self.route_loss, ROUTE_LOSSES)
        self.route_forcing = _shares("route_forcing", self.route_forcing)
        if not 0 <= self.route_decision_share <= 1:
            raise ValueError(f"train.route_decision_share={self.route_decision_share}: a share between 0 and 1")
        if self.route_decision_share and self.route_loss != "per_token":
            raise ValueError("train.route_decision_share needs train.route_loss=per_token (mean_alpha averages "
                             "alpha over positions before the loss)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio}: must be between 0 and 1")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"train.max_grad_norm={self.max_grad_norm}: give a positive number or null")
        if len(self.adam_betas) != 2:
            raise ValueError(f"train.adam_betas={self.adam_betas}: give two numbers, e.g. [0.9, 0.999]")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        for name in self.report_to:
            _choice("report_to", name, REPORTERS)


def _shares(name: str, value):
    """A share between 0 and 1, or a mapping objective -> such a share (YAML may give numbers as strings)."""
    def one(key: str, v) -> float:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"train.{key}={v!r}: expected a number between 0 and 1 (or, for train.{name}, a "
                             f"mapping objective: number)") from None
        if not 0 <= v <= 1:
            raise ValueError(f"train.{key}={v}: a share between 0 and 1")
        return v
    if isinstance(value, dict):
        return {str(k): one(f"{name}.{k}", v) for k, v in value.items()}
    return one(name, value)


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"train.{name}={value!r}: must be a positive integer")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"train.{name}={value!r}: choose one of {', '.join(choices)}")
