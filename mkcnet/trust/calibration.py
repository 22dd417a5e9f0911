"""Calibrated confidence: temperature scaling per head, and how often the model was right per band.

Temperature scaling (Guo et al., 2017) divides a head's logits by one scalar T, fitted on the
validation split to minimise the negative log-likelihood; T > 1 softens an over-confident head.
The order of the classes, hence accuracy and AUC, does not change. `Band`s keep, per predicted
quality class and band of calibrated diagnosis confidence, how often the validation diagnosis
was right: the number a reading quotes ("on validation images like this one ... right 61 % of
the time"), measured rather than implied by the probability.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

HEADS = ("diagnosis", "quality")
T_RANGE = (0.05, 20.0)
BANDS_PER_GROUP = 4
MIN_BAND = 10  # fewer validation images than this make no band: the reading then quotes none


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_RANGE that minimises the NLL (a bounded 1-D search over log T)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    found = minimize_scalar(lambda t: nll(logits, labels, math.exp(t)), method="bounded",
                            bounds=tuple(map(math.log, T_RANGE)), options={"xatol": 1e-5})
    return float(math.exp(found.x))


@dataclass(frozen=True)
class Band:
    """Validation images with this predicted quality and calibrated diagnosis confidence in [low, high]."""

    quality: int  # predicted quality class; -1 for a model without a quality head
    low: float
    high: float
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


def reliability_bands(correct: np.ndarray, confidence: np.ndarray, quality: np.ndarray | None,
                      per_group: int = BANDS_PER_GROUP) -> list[Band]:
    """Equal-count confidence bands (≥ MIN_BAND images each) within each predicted quality class."""
    correct, confidence = np.asarray(correct, bool), np.asarray(confidence, float)
    quality = np.full(len(correct), -1) if quality is None else np.asarray(quality)
    bands = []
    for q in np.unique(quality):
        rows = np.flatnonzero(quality == q)
        count = min(per_group, len(rows) // MIN_BAND)
        if count == 0:
            continue
        order = rows[np.argsort(confidence[rows], kind="stable")]
        for part in np.array_split(order, count):
            bands.append(Band(int(q), float(confidence[part].min()), float(confidence[part].max()),
                              len(part), int(correct[part].sum())))
    return bands


@dataclass
class Calibration:
    """What `mkcnet calibrate` stores in a checkpoint's header (key "calibration")."""

    temperatures: dict[str, float]
    bands: list[Band] = field(default_factory=list)
    split: str = ""  # the split it was fitted on
    scores: dict[str, float] = field(default_factory=dict)  # "diagnosis.before.ECE", "quality.after.LQ.Brier", ...

    def probabilities(self, head: str, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperatures.get(head, 1.0))

    def band(self, quality: int | None, confidence: float) -> Band | None:
        """The validation band of an image with this predicted quality and confidence (nearest band)."""
        q = -1 if quality is None else quality
        own = [b for b in self.bands if b.quality == q]
        if not own:
            return None
        return min(own, key=lambda b: 0.0 if b.low <= confidence <= b.high else
                   min(abs(confidence - b.low), abs(confidence - b.high)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        return cls({k: float(v) for k, v in raw["temperatures"].items()}, [Band(**b) for b in raw.get("bands", [])],
                   raw.get("split", ""), raw.get("scores", {}))


def calibration_scores(logits: dict[str, np.ndarray], diagnosis: np.ndarray, quality: np.ndarray, num_quality: int,
                       temperatures: dict[str, float]) -> dict[str, float]:
    """NLL, ECE and Brier per head on its labelled rows, before (raw softmax) and after temperature
    scaling; the diagnosis head's also per HQ/LQ group: "diagnosis.before.ECE", "diagnosis.after.LQ.Brier"."""
    from mkcnet.metrics import calibration_metrics  # scikit-learn: only when scoring, not when predicting

    labels = {"diagnosis": np.asarray(diagnosis), "quality": np.asarray(quality)}
    scores = {}
    for head in HEADS:
        z = logits.get(head)
        if z is None or not (labels[head] >= 0).any():
            continue
        known = labels[head] >= 0
        group = labels["quality"][known] if head == "diagnosis" else None
        for when, t in (("before", 1.0), ("after", temperatures.get(head, 1.0))):
            scores[f"{head}.{when}.NLL"] = nll(z[known], labels[head][known], t)
            metrics = calibration_metrics(labels[head][known], softmax(z[known], t), group, num_quality)
            scores |= {f"{head}.{when}.{key}": value for key, value in metrics.items()}
    return scores


def fit_calibration(logits: dict[str, np.ndarray], diagnosis: np.ndarray, quality: np.ndarray, num_quality: int,
                    split: str = "") -> Calibration:
    """One temperature per head from its labelled rows, the before/after scores, and the bands."""
    labels = {"diagnosis": np.asarray(diagnosis), "quality": np.asarray(quality)}
    temperatures = {head: fit_temperature(logits[head][labels[head] >= 0], labels[head][labels[head] >= 0])
                    for head in HEADS if logits.get(head) is not None}
    scores = calibration_scores(logits, diagnosis, quality, num_quality, temperatures)
    probs = softmax(logits["diagnosis"], temperatures["diagnosis"])
    known = labels["diagnosis"] >= 0
    predicted_quality = None if logits.get("quality") is None else logits["quality"].argmax(1)[known]
    bands = reliability_bands(probs.argmax(1)[known] == labels["diagnosis"][known], probs.max(1)[known],
                              predicted_quality)
    return Calibration(temperatures, bands, split, scores)
