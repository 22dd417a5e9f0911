"""Using trained models: predictions, evaluation on a split, results packs."""

from mkcnet.inference.predict import Predictions, predict_batches
from mkcnet.inference.results import ResultsPack

__all__ = ["Predictions", "ResultsPack", "predict_batches"]
