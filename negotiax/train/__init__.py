"""Training stage: the loss, the Accelerate loop, checkpoints and the metrics log.

`Trainer` runs steps from any step source (it knows nothing of recipes or data files); a whole training job
from a recipe is `negotiax.pipeline.train_from_recipe`.
"""
from .config import TrainConfig
from .trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "TrainConfig", "Trainer"]
