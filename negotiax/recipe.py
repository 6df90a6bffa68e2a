"""A recipe: every section of an experiment's configuration in one YAML file (see configs/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .backbone import ModelConfig
from .circuit import CircuitConfig
from .config import load_config
from .data.config import DataConfig
from .evaluation.config import EvalConfig
from .generation.config import GenerationConfig
from .run_config import RunConfig
from .train.config import TrainConfig


@dataclass
class Recipe:
    """model + circuit + data + train + generate + eval (+ the systems `negotiax run` compares), and where
    the run writes."""

    name: str = "negotiax"
    output_dir: str = "runs/negotiax"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        forcing = self.train.route_forcing
        if isinstance(forcing, dict):  # named per objective: the names must be this recipe's objectives
            known = set(self.circuit.objectives) | set(self.data.train)
            unknown = sorted(set(forcing) - known)
            if unknown:
                raise ValueError(f"train.route_forcing names {unknown}, which this recipe does not train; its "
                                 f"objectives are {sorted(known)}")


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    return load_config(Recipe, path, overrides)
