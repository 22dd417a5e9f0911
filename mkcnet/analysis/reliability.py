"""Reliability diagrams: accuracy against confidence, raw softmax and calibrated.

A results pack holds the probabilities its model gave (calibrated when the model is, with the
temperatures in the pack header). The raw softmax is recovered exactly from them: log p is
z / T up to a per-row constant, so softmax(T · log p) = softmax(z).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import expected_calibration_error
from mkcnet.trust.calibration import softmax


def reliability_curve(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per equal-width confidence bin [low, high) (empty ones left out): mean confidence, accuracy, count."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    band = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = [{"low": b / bins, "high": (b + 1) / bins, "confidence": confidence[band == b].mean(),
             "accuracy": correct[band == b].mean(), "n": int((band == b).sum())} for b in np.unique(band)]
    return pd.DataFrame(rows, columns=["low", "high", "confidence", "accuracy", "n"])


def reliability_tables(pack: ResultsPack, head: str = "diagnosis", bins: int = 10) -> dict[str, pd.DataFrame]:
    """{"raw": curve, "calibrated": curve} of a pack's images with a known label (see `reliability_curve`)."""
    labels = pack.predictions[head].to_numpy()
    known = labels >= 0
    return {kind: reliability_curve(labels[known], probs[known], bins)
            for kind, probs in pack_probabilities(pack, head).items()}


def pack_probabilities(pack: ResultsPack, head: str = "diagnosis") -> dict[str, np.ndarray]:
    """{"raw": ..., "calibrated": ...} for a pack (only "raw" when its model was not calibrated)."""
    probs = pack.probabilities(head)
    t = (pack.header.get("temperatures") or {}).get(head)
    if not t:
        return {"raw": probs}
    return {"raw": softmax(t * np.log(np.clip(probs, 1e-12, 1)), 1.0), "calibrated": probs}


def reliability_figure(packs: dict[str, ResultsPack], head: str = "diagnosis") -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="perfect")
    for name, pack in packs.items():
        labels = pack.predictions[head].to_numpy()
        known = labels >= 0
        for kind, probs in pack_probabilities(pack, head).items():
            curve = reliability_curve(labels[known], probs[known])
            ece = expected_calibration_error(labels[known], probs[known])
            fig.add_scatter(x=curve["confidence"], y=curve["accuracy"], mode="lines+markers",
                            line={"dash": "dash" if kind == "raw" else "solid"},
                            name=f"{name}, {kind} (ECE {ece:.3f})", customdata=curve["n"],
                            hovertemplate="confidence %{x:.2f}<br>right %{y:.0%}<br>%{customdata} images")
    fig.update_layout(template="plotly_white",  # as every figure of the project
                      xaxis_title=f"{head} confidence (top probability)", yaxis_title="share right",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], legend={"orientation": "h", "y": -0.25},
                      margin={"t": 30}, title="Reliability on the validation split")
    return fig
