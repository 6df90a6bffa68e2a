"""Data configuration (owned by the data layer)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where each objective's training and test data come from, and how examples are formatted."""
