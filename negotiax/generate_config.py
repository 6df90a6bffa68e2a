"""Generation configuration (owned by generation)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationConfig:
    """Decoding settings."""
