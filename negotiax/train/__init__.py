"""Training stage: the loss, the Accelerate loop, checkpoints and the metrics log.

`Trainer` runs steps from any step source (it knows nothing of recipes or data files); a whole training job
from a recipe is `negotiax.pipeline.train_from_recipe`.
"""
from .config import TrainConfig  # the loop itself (`.trainer`) is imported only by who runs it

__all__ = ["TrainConfig"]
