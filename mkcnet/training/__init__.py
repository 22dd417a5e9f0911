"""Training: the objective, the Stage II meta step and the epoch loop."""

from mkcnet.training.meta_step import meta_gradients, meta_step
from mkcnet.training.trainer import FitResult, Trainer

__all__ = ["FitResult", "Trainer", "meta_gradients", "meta_step"]
