"""Training configuration (owned by the trainer)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Optimiser, schedule, loss weights, checkpoints."""
