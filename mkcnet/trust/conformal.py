"""Decisions with a stated guarantee: prediction sets per image-quality group, and referral with a
bounded error.

**Prediction sets** (split-conformal, Mondrian by predicted quality; Vovk et al., 2005). The score
of class y for an image is s = 1 − p(y), p the calibrated diagnosis probability ("LAC", Sadinle et
al., 2019). Within each predicted quality class g, fitted on its n_g validation images, the
threshold q_g is the ⌈(n_g + 1)·coverage⌉-th smallest score of their true classes; a new image the
quality head puts in g gets the set {y : s(y) ≤ q_g}, and its top class besides, so that no set is
empty (a larger set only covers more). For an image exchangeable with g's validation images,
P(true class in set | predicted quality g) ≥ coverage, whatever the model: the guarantee holds per
quality group, where a single threshold would cover the HQ images more than promised and the LQ
ones less. A group with fewer than coverage / (1 − coverage) validation images (9 at 90 %) has no
such rank: its sets hold every class, which keeps the guarantee and says plainly that the model
cannot narrow the answer down there.

Written by hand rather than through crepes or MAPIE: the rule is one rank (the guard's
`conformal_threshold` is the same), the checkpoint stores plain numbers (never a pickled fitted
object), and keeping each group's sorted validation scores lets a reader ask for another coverage
without refitting.

**Referral with a bounded error** (Learn then Test, Angelopoulos et al., 2021). Images are kept
(diagnosed) when a trust score is at least λ and referred otherwise. For λ on a fixed grid from
strict to loose, the null hypothesis "the error among kept images exceeds ε" is tested with the
exact binomial p-value of the validation errors among the kept; fixed-sequence testing walks down
the grid while it rejects at level δ and keeps the loosest λ rejected. Then, over the draw of the
validation split, P(error among kept images > ε) ≤ δ. The walk starts at the strictest grid point
that keeps at least ⌈log δ / log(1 − ε)⌉ validation images (fewer cannot reject even with no error;
that start depends on the scores only, never on which images were right); `tests/test_trust.py`
checks the guarantee on simulated fresh draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COVERAGE = 0.90
NO_QUALITY = -1  # the one group of a model without a quality head


def conformal_rank(n: int, coverage: float) -> int | None:
    """The 1-based rank ⌈(n + 1)·coverage⌉ of the threshold among n scores; None when it exceeds n."""
    k = math.ceil((n + 1) * coverage - 1e-9)  # the tolerance keeps (n + 1)·0.9 = 9 from becoming 10
    return k if k <= n else None


@dataclass
class PredictionSets:
    """What `mkcnet calibrate` stores in a checkpoint's header (key "prediction_sets").

    >>> ps = fit_prediction_sets(np.array([[.9, .1], [.6, .4]] * 10), np.array([0, 1] * 10), None)
    >>> ps.threshold(NO_QUALITY)  # the 19th smallest of the 20 scores 1 − p(true class)
    0.6
    >>> ps.sets(np.array([[.95, .05], [.55, .45]]), None).tolist()
    [[True, False], [True, True]]
    """

    coverage: float
    scores: dict[int, np.ndarray]  # predicted quality → its validation images' scores, sorted
    split: str = ""
    measured: dict[str, float] = field(default_factory=dict)  # "coverage", "HQ.size", … on the fitting split

    def threshold(self, group: int, coverage: float | None = None) -> float:
        """q_g: scores up to it are in the set; +inf where the group is too small (every class)."""
        ranked = self.scores.get(int(group))
        if ranked is None or len(ranked) == 0:
            return math.inf
        k = conformal_rank(len(ranked), self.coverage if coverage is None else coverage)
        return math.inf if k is None else float(ranked[k - 1])

    def sets(self, probs: np.ndarray, groups: np.ndarray | None, coverage: float | None = None) -> np.ndarray:
        """N×K booleans: class k is in image n's set. `groups`: predicted quality per image (None
        for a model without a quality head)."""
        probs = np.asarray(probs, np.float64)
        groups = np.full(len(probs), NO_QUALITY) if groups is None else np.asarray(groups)
        limits = np.array([self.threshold(g, coverage) for g in groups])
        member = (1.0 - probs) <= limits[:, None] + 1e-12
        member[np.arange(len(probs)), probs.argmax(1)] = True
        return member

    def to_dict(self) -> dict[str, Any]:
        return {"coverage": self.coverage, "split": self.split, "measured": self.measured,
                "scores": {str(g): [round(float(s), 6) for s in v] for g, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PredictionSets:
        return cls(float(raw["coverage"]), {int(g): np.sort(np.asarray(v, np.float64)) for g, v in raw["scores"].items()},
                   raw.get("split", ""), raw.get("measured", {}))


def fit_prediction_sets(probs: np.ndarray, labels: np.ndarray, predicted_quality: np.ndarray | None,
                        coverage: float = COVERAGE, split: str = "") -> PredictionSets:
    """Each predicted quality group's sorted scores 1 − p(true class), from the labelled rows."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    groups = np.full(len(labels), NO_QUALITY) if predicted_quality is None else np.asarray(predicted_quality)
    known = labels >= 0
    true_scores = 1.0 - probs[np.flatnonzero(known), labels[known]]
    scores = {int(g): np.sort(true_scores[groups[known] == g]) for g in np.unique(groups[known])}
    return PredictionSets(float(coverage), scores, split)


def set_metrics(member: np.ndarray, labels: np.ndarray, quality: np.ndarray | None, num_quality: int) -> dict[str, float]:
    """Empirical coverage, mean set size and share of single-class sets, on all labelled rows and per
    HQ/LQ group of the *known* quality: "coverage", "size", "single", "LQ.coverage", …"""
    from mkcnet.metrics import quality_groups

    labels = np.asarray(labels)
    known = np.flatnonzero(labels >= 0)
    groups = {"": known}
    if quality is not None:
        lq, hq = quality_groups(np.asarray(quality), num_quality)
        groups |= {"HQ.": np.intersect1d(hq, known), "LQ.": np.intersect1d(lq, known)}
    out = {}
    for prefix, rows in groups.items():
        if len(rows) == 0:
            continue
        sizes = member[rows].sum(1)
        out |= {f"{prefix}n": float(len(rows)), f"{prefix}coverage": float(member[rows, labels[rows]].mean()),
                f"{prefix}size": float(sizes.mean()), f"{prefix}single": float((sizes == 1).mean())}
    return out


# -- referral with a bounded error -------------------------------------------------------------------
GRID = np.linspace(1.0, 0.0, 1001)  # trust scores are probabilities (or their product): fixed before any data


@dataclass(frozen=True)
class OperatingPoint:
    """Keep (diagnose) images whose trust score is at least `threshold`, refer the rest: with
    probability ≥ 1 − delta over the validation draw, the error among kept images is ≤ epsilon."""

    epsilon: float
    delta: float
    threshold: float  # +inf: no threshold could be certified; refer every image
    n: int  # validation images
    kept: int  # of them, kept at this threshold
    errors: int  # of the kept, misdiagnosed

    @property
    def found(self) -> bool:
        return math.isfinite(self.threshold)

    @property
    def share_kept(self) -> float:
        return self.kept / self.n if self.n else 0.0

    @property
    def error(self) -> float:
        """The validation error among the kept images (NaN when none is kept)."""
        return self.errors / self.kept if self.kept else math.nan


def min_kept(epsilon: float, delta: float) -> int:
    """The fewest kept images that can show error ≤ ε at level δ: (1 − ε)^n ≤ δ with no error."""
    return math.ceil(math.log(delta) / math.log(1 - epsilon) - 1e-9)


def risk_controlled_threshold(correct: np.ndarray, score: np.ndarray, epsilon: float = 0.05, delta: float = 0.1,
                              grid: np.ndarray = GRID) -> OperatingPoint:
    """The loosest trust threshold that Learn-then-Test certifies (module docstring).

    >>> rng = np.random.default_rng(0)
    >>> score = rng.random(2000); correct = rng.random(2000) > 0.3 * (1 - score) ** 2
    >>> point = risk_controlled_threshold(correct, score, epsilon=0.05, delta=0.1)
    >>> 0.2 < point.threshold < 0.5 and point.error <= 0.05
    True
    """
    from scipy.stats import binom

    if not 0 < epsilon < 1 or not 0 < delta < 1:
        raise ValueError(f"epsilon and delta must lie in (0, 1), got {epsilon}, {delta}")
    correct, score = np.asarray(correct, bool), np.asarray(score, np.float64)
    kept = (score[None, :] >= grid[:, None] - 1e-12)  # grid points × images
    n_kept, n_errors = kept.sum(1), (kept & ~correct[None, :]).sum(1)
    p_values = binom.cdf(n_errors, n_kept, epsilon)  # P(this few errors | error rate exactly ε)
    chosen = None
    for j in np.flatnonzero(n_kept >= min_kept(epsilon, delta)):  # strict → loose
        if p_values[j] > delta:
            break
        chosen = j
    if chosen is None:
        return OperatingPoint(epsilon, delta, math.inf, len(score), 0, 0)
    return OperatingPoint(epsilon, delta, float(grid[chosen]), len(score), int(n_kept[chosen]), int(n_errors[chosen]))
