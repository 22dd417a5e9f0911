"""Does this image look like the model's training data? An out-of-distribution guard in two parts.

1. Input checks on the decoded image, before any network: colourfulness (grey vs colour) and
   aspect ratio against the training images' range. They catch the obvious wrong modality.
2. A feature score: how far the image's feature (by default the shared backbone's globally
   averaged map; the fused diagnosis feature is the other choice) lies from the training
   images', against a threshold set on the validation split: the split-conformal 95 % point
   (the ⌈(n + 1)·0.95⌉-th smallest of its n distances), so that a new image from the training
   distribution is flagged with probability at most 5 % (Vovk et al., 2005; for exchangeable
   images, whatever the distances' distribution). The plain 95th percentile of a 100-200 image
   split flags more: 5.8 % of held-out CT-IQAD images on average, one split in ten above 10 %.
   Two scores are implemented; the default was chosen by measurement (docs/workbench.md):
   - "mahalanobis": class-conditional Gaussians with one shared, Ledoit-Wolf shrunk covariance
     (Lee et al., 2018): the distance to the nearest diagnosis class mean.
   - "knn": the distance to the k-th nearest training feature after L2 normalisation
     (Sun et al., 2022).

`ood_score` is the feature distance divided by the threshold: above 1 is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COVERAGE = 0.95  # of in-distribution images passed; the rest (≤ 5 %) flagged
K = 10
COLOUR_MARGIN = 0.04  # colourfulness is on a 0-1 scale; JPEG noise keeps grey images below ~0.01
ASPECT_MARGIN = 1.15


def input_statistics(image: np.ndarray) -> tuple[float, float]:
    """(colourfulness, aspect) of a decoded uint8 H×W×C image: the mean spread between the
    colour channels (0 for grey, 0-1 scale) and width / height."""
    h, w = image.shape[:2]
    step = max(1, int(max(h, w) // 256))  # a subsample is enough for a mean
    small = image[::step, ::step].astype(np.int16)
    colour = 0.0 if small.shape[2] == 1 else float((small.max(axis=2) - small.min(axis=2)).mean() / 255)
    return colour, w / h


@dataclass(frozen=True)
class InputRange:
    colourfulness: tuple[float, float]
    aspect: tuple[float, float]

    @classmethod
    def fit(cls, stats: np.ndarray) -> InputRange:
        """From the training images' N×2 statistics: their 0.5-99.5 % range, widened by a margin."""
        colour = np.quantile(stats[:, 0], [0.005, 0.995])
        aspect = np.quantile(stats[:, 1], [0.005, 0.995])
        return cls((max(0.0, float(colour[0]) - COLOUR_MARGIN), float(colour[1]) + COLOUR_MARGIN),
                   (float(aspect[0]) / ASPECT_MARGIN, float(aspect[1]) * ASPECT_MARGIN))

    def problem(self, colourfulness: float, aspect: float) -> str:
        """Why an image fails the input checks, in words; "" if it passes."""
        lo, hi = self.colourfulness
        if colourfulness > hi:
            return ("it is a colour image; the model was trained on greyscale images" if hi < 0.1 else
                    f"it is more colourful than any training image ({colourfulness:.2f} against at most {hi:.2f})")
        if colourfulness < lo:
            return ("it is a greyscale image; the model was trained on colour images" if colourfulness < 0.02 else
                    f"it is less colourful than any training image ({colourfulness:.2f} against at least {lo:.2f})")
        if not self.aspect[0] <= aspect <= self.aspect[1]:
            return (f"its aspect ratio ({aspect:.2f}) is outside the training images' "
                    f"({self.aspect[0]:.2f}-{self.aspect[1]:.2f})")
        return ""


def conformal_threshold(distances: np.ndarray, coverage: float = COVERAGE) -> float:
    """The ⌈(n + 1)·coverage⌉-th smallest of n validation distances: an unseen in-distribution image
    then lies above it with probability at most 1 - coverage. With too few images for that
    (n < coverage / (1 - coverage), 19 for 95 %) the largest distance is the best there is."""
    ranked = np.sort(np.asarray(distances, np.float64))
    if len(ranked) == 0:
        raise ValueError("no validation distances to set the guard's threshold on")
    k = math.ceil((len(ranked) + 1) * coverage - 1e-9)  # the tolerance keeps (n + 1)·0.95 = 19 from becoming 20
    return float(ranked[min(k, len(ranked)) - 1])


@dataclass(frozen=True)
class Verdict:
    ood: bool
    score: float  # feature distance / threshold (NaN when the input checks already failed)
    reason: str = ""  # why it was flagged, in words; "" when not


@dataclass
class Guard:
    """What `mkcnet calibrate` stores with a checkpoint: header key "guard" + tensors "guard.*"."""

    method: str  # "mahalanobis" | "knn"
    reference: np.ndarray  # mahalanobis: K×D class means; knn: N×D unit-norm training features
    precision: np.ndarray | None  # mahalanobis: D×D shared precision matrix
    threshold: float
    inputs: InputRange
    feature: str = "backbone"
    coverage: float = COVERAGE
    k: int = K
    measured: dict[str, float] = field(default_factory=dict)  # share flagged per checked split

    def distance(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float64)
        if self.method == "mahalanobis":
            centred = x[:, None, :] - self.reference[None]  # N×K×D
            d2 = np.einsum("nkd,de,nke->nk", centred, self.precision, centred)
            return np.sqrt(np.maximum(d2.min(axis=1), 0))
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        similarity = x @ self.reference.T  # cosine
        kth = np.sort(similarity, axis=1)[:, -min(self.k, similarity.shape[1])]
        return np.sqrt(np.maximum(2 - 2 * kth, 0))

    def verdicts(self, features: np.ndarray, stats: list[tuple[float, float]]) -> list[Verdict]:
        scores = self.distance(features) / self.threshold
        out = []
        for score, (colour, aspect) in zip(scores, stats):
            problem = self.inputs.problem(colour, aspect)
            if problem:
                out.append(Verdict(True, float(score), problem))
            elif score > 1:
                out.append(Verdict(True, float(score), f"its features are far from the training images' "
                                                       f"({score:.1f}× the validation threshold)"))
            else:
                out.append(Verdict(False, float(score)))
        return out

    def to_header(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "feature": self.feature,
                "coverage": self.coverage, "k": self.k, "measured": self.measured,
                "inputs": {"colourfulness": list(self.inputs.colourfulness), "aspect": list(self.inputs.aspect)}}

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"reference": self.reference.astype(np.float32)}
        if self.precision is not None:
            out["precision"] = self.precision.astype(np.float32)
        return out

    @classmethod
    def from_header(cls, raw: dict[str, Any], tensors: dict[str, np.ndarray]) -> Guard:
        inputs = InputRange(tuple(raw["inputs"]["colourfulness"]), tuple(raw["inputs"]["aspect"]))
        return cls(raw["method"], tensors["reference"].astype(np.float64),
                   None if "precision" not in tensors else tensors["precision"].astype(np.float64),
                   float(raw["threshold"]), inputs, raw.get("feature", "backbone"),
                   raw.get("coverage", raw.get("quantile", COVERAGE)),  # "quantile": headers before conformal
                   raw.get("k", K), raw.get("measured", {}))


def fit_guard(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
              train_stats: np.ndarray, method: str = "mahalanobis", coverage: float = COVERAGE,
              feature: str = "backbone") -> Guard:
    """Reference from the training features, threshold from the validation features (conformal)."""
    x = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels)
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        classes = [c for c in np.unique(labels) if c >= 0]
        means = np.stack([x[labels == c].mean(axis=0) for c in classes])
        centred = x[labels >= 0] - means[np.searchsorted(classes, labels[labels >= 0])]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        guard = Guard(method, means, precision, 1.0, InputRange.fit(train_stats), feature, coverage)
    elif method == "knn":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        guard = Guard(method, unit, None, 1.0, InputRange.fit(train_stats), feature, coverage)
    else:
        raise ValueError(f"unknown guard method {method!r} (mahalanobis, knn)")
    guard.threshold = conformal_threshold(guard.distance(val_features), coverage)
    return guard
