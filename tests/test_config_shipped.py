"""Every YAML shipped under configs/ loads and validates with the config class of the command it is for."""
from __future__ import annotations

from pathlib import Path

import pytest

from negotiax.config import load_config
from negotiax.experiments.ablate import AblateConfig
from negotiax.experiments.interpret import InterpretConfig
from negotiax.experiments.profile import ProfileConfig
from negotiax.experiments.results import ResultsConfig
from negotiax.experiments.sweep import SweepConfig
from negotiax.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENTS = {"ablate": AblateConfig, "interpret": InterpretConfig, "profile": ProfileConfig, "sweep": SweepConfig,
               "paper": ResultsConfig}


@pytest.mark.parametrize("path", sorted(ROOT.glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_load(path):
    recipe = load_recipe(str(path), [])
    assert recipe.train.steps > 0 and recipe.circuit.objectives


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_configs_load(path):
    cls = EXPERIMENTS[path.name.split("_")[0]]
    cfg = load_config(cls, path)
    if cls is ProfileConfig:
        assert "sft-lora" in cfg.variants  # the baseline users would pick instead is profiled too
