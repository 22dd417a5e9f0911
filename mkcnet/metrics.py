"""Diagnosis and quality metrics as the paper reports them, overall and per quality group.

AUC is computed from probabilities (macro one-vs-one for more than 2 classes). The paper's code
computes its binary AUC from hard predictions; that number is reported too, as `auc_hard`, so
users can compare with the paper's tables. F1 is binary for 2 classes and macro otherwise.
Quality groups: HQ is the top quality class, LQ every other one.
"""

from __future__ import annotations

import warnings

import numpy as np


def quality_groups(quality: np.ndarray, num_quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the LQ images (known quality below the top class) and of the HQ ones."""
    quality = np.asarray(quality)
    return np.flatnonzero((quality >= 0) & (quality < num_quality - 1)), np.flatnonzero(quality == num_quality - 1)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, hard_auc: bool = True) -> dict[str, float]:
    """acc, f1, auc (+ auc_hard for binary tasks unless `hard_auc` is off); NaN where undefined."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score  # ~1 s to import: `mkcnet ood` needs none

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    out = {"n": float(len(labels))}
    if len(labels) == 0:
        return out | {"acc": np.nan, "f1": np.nan, "auc": np.nan}
    out["acc"] = float(accuracy_score(labels, preds))
    average = "binary" if num_classes == 2 else "macro"
    out["f1"] = float(f1_score(labels, preds, average=average, labels=None if num_classes == 2 else
                               list(range(num_classes)), zero_division=0))
    present = np.unique(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if num_classes == 2:
            ok = len(present) == 2
            out["auc"] = float(roc_auc_score(labels, probs[:, 1])) if ok else np.nan
            if hard_auc:
                out["auc_hard"] = float(roc_auc_score(labels, preds)) if ok else np.nan
        elif len(present) == num_classes:
            normalised = probs / probs.sum(axis=1, keepdims=True)
            out["auc"] = float(roc_auc_score(labels, normalised, multi_class="ovo", average="macro",
                                             labels=list(range(num_classes))))
        else:
            out["auc"] = np.nan
    return out


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks 1..n along each row, tied values sharing their mean rank (as Mann-Whitney counts them)."""
    rows, n = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, 1)
    starts = np.ones((rows, n), bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # every row starts a new group
    position = np.tile(np.arange(1, n + 1, dtype=np.float64), rows)
    mean = (np.bincount(group, weights=position) / np.bincount(group))[group].reshape(rows, n)
    ranks = np.empty_like(mean)
    np.put_along_axis(ranks, order, mean, 1)
    return ranks


def _pair_auc(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per row, the ROC AUC of `scores` separating the `positive` from the `negative` entries
    (others left out); ties count ½. Rows lacking either class give NaN."""
    ranks = _average_ranks(np.where(positive | negative, scores, np.inf))  # left-out entries rank last
    n_pos, n_neg = positive.sum(1), negative.sum(1)
    u = np.where(positive, ranks, 0).sum(1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def draw_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """acc, f1, auc of many draws at once, one per row of `labels` (R×n) with `probs` (R×n×K):
    `classification_metrics(labels[r], probs[r], hard_auc=False)` for every r, computed in numpy
    (the same definitions, AUC from ranks rather than the ROC trapezoid: equal to ~1e-15) in a
    few ms instead of ~3 ms a draw."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[2]
    preds = probs.argmax(axis=2)
    acc = (preds == labels).mean(axis=1)
    classes = range(1, 2) if num_classes == 2 else range(num_classes)  # binary F1 is the positive class's
    f1 = []
    for k in classes:
        tp = ((preds == k) & (labels == k)).sum(1).astype(np.float64)
        denominator = (labels == k).sum(1).astype(np.float64) + (preds == k).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1.append(np.where(denominator > 0, 2.0 * tp / denominator, 0.0))  # zero_division=0
    f1 = np.mean(f1, axis=0)
    if num_classes == 2:
        auc = _pair_auc(probs[:, :, 1], labels == 1, labels == 0)
    else:  # macro one-vs-one over every pair, defined only where every class is present
        normalised = probs / probs.sum(axis=2, keepdims=True)
        pairs = [(_pair_auc(normalised[:, :, a], labels == a, labels == b)
                  + _pair_auc(normalised[:, :, b], labels == b, labels == a)) / 2
                 for a in range(num_classes) for b in range(a + 1, num_classes)]
        every = np.all([(labels == k).any(1) for k in range(num_classes)], axis=0)
        auc = np.where(every, np.mean(pairs, axis=0), np.nan)
    return {"acc": acc, "f1": f1, "auc": auc}


def evaluation_metrics(diagnosis: np.ndarray, diagnosis_probs: np.ndarray, quality: np.ndarray,
                       quality_probs: np.ndarray | None, num_quality: int) -> dict[str, float]:
    """Flat dict: `diagnosis.auc`, `diagnosis.HQ.acc`, `quality.f1`, ... for a results table."""
    out: dict[str, float] = {}
    known = quality >= 0
    groups = {"": np.arange(len(diagnosis))}
    if known.any():
        lq, hq = quality_groups(quality, num_quality)
        groups |= {"HQ.": hq, "LQ.": lq}
    for prefix, rows in groups.items():
        for key, value in classification_metrics(diagnosis[rows], diagnosis_probs[rows]).items():
            out[f"diagnosis.{prefix}{key}"] = value
    if quality_probs is not None and known.any():
        for key, value in classification_metrics(quality[known], quality_probs[known]).items():
            out[f"quality.{key}"] = value
    return out


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the share-weighted gap between confidence and accuracy over
    `bins` equal-width bins of the top probability."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return np.nan
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    band = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in np.unique(band):
        rows = band == b
        gap += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(gap)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of Σ_k (p_k − [y = k])²."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return np.nan
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray | None = None,
                        num_quality: int = 2) -> dict[str, float]:
    """`ECE`, `Brier` overall and per quality group (`HQ.ECE`, `LQ.Brier`, ...)."""
    groups = {"": np.arange(len(labels))}
    if quality is not None and (np.asarray(quality) >= 0).any():
        lq, hq = quality_groups(quality, num_quality)
        groups |= {"HQ.": hq, "LQ.": lq}
    out = {}
    for prefix, rows in groups.items():
        out[f"{prefix}ECE"] = expected_calibration_error(labels[rows], probs[rows])
        out[f"{prefix}Brier"] = brier_score(labels[rows], probs[rows])
    return out
