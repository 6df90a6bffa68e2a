"""Evaluation configuration (owned by evaluation)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """Which metrics and judges to run."""
