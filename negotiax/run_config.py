"""`negotiax run` configuration (owned by the run): which systems the report compares."""
from __future__ import annotations

from dataclasses import dataclass, field

COMPARABLE = ("sft-lora",)


@dataclass
class RunConfig:
    """Base and the trained circuit are always compared; `compare` adds baselines trained on the same
    mixture, steps and batches (`sft-lora`: LoRA SFT on the backbone, settings in train.sft_lora)."""

    compare: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.compare, str):
            self.compare = [self.compare]
        bad = [c for c in self.compare if c not in COMPARABLE]
        if bad:
            raise ValueError(f"run.compare={self.compare}: unknown system(s) {bad}; choose from {', '.join(COMPARABLE)}")
