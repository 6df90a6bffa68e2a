"""`negotiax run` configuration (owned by the run): which systems the report compares."""
from __future__ import annotations

from dataclasses import dataclass, field

COMPARABLE = ("sft-lora",)


@dataclass
class RunConfig:
    """Base and the trained circuit are always compared; `compare` adds baselines trained on the same
    mixture, steps and batches (`sft-lora`: LoRA SFT on the backbone, settings in train.sft_lora)."""

    compare: list[str] = field(default_factory=list)
    # Extra decoding passes of the trained circuit with one objective's preference beta changed, e.g.
    # {harmless: [-4, 4]}: refusal and over-refusal at each beta show whether beta moves the answers.
    preference_sweep: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for objective, betas in (self.preference_sweep or {}).items():
            if not isinstance(betas, list) or not all(isinstance(b, (int, float)) for b in betas):
                raise ValueError(f"run.preference_sweep.{objective}={betas!r}: give a list of numbers, e.g. [-4, 4]")
            self.preference_sweep[objective] = [float(b) for b in betas]
        if isinstance(self.compare, str):
            self.compare = [self.compare]
        bad = [c for c in self.compare if c not in COMPARABLE]
        if bad:
            raise ValueError(f"run.compare={self.compare}: unknown system(s) {bad}; choose from {', '.join(COMPARABLE)}")
