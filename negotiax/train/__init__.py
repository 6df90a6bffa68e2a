"""Training: the loss, the Accelerate loop, checkpoints, and `train_from_recipe`.

Heavy modules load on first use: `negotiax.recipe` imports TrainConfig from here, and the pipeline
imports the recipe back.
"""
from .config import TrainConfig

_LAZY = {"Trainer": "trainer", "NonFiniteLossError": "trainer", "train_from_recipe": "pipeline"}
__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
