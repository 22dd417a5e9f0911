"""Would one temperature per predicted quality class calibrate better than one per head?

Cross-validated on each bundled model's validation pack (no data needed: the logits are
recovered from the pack's calibrated probabilities and its temperature, up to a per-row
constant): 5 folds, 20 random fold assignments; the temperature(s) fitted on four folds, the
held-out fold scored. Prints NLL and ECE (15 bins), overall and in the worst predicted quality.

    python scripts/measure_calibration.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mkcnet.analysis.reliability import pack_probabilities
from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import expected_calibration_error
from mkcnet.trust.calibration import MIN_BAND, fit_temperature, softmax

REPO = Path(__file__).resolve().parents[1]
FOLDS, REPEATS = 5, 20


def held_out(z: np.ndarray, y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Calibrated probabilities of every image from temperatures fitted without its fold."""
    out = np.zeros_like(z)
    fold = rng.permutation(len(y)) % FOLDS
    for k in range(FOLDS):
        fit, score = fold != k, fold == k
        shared = fit_temperature(z[fit], y[fit])
        if groups is None:
            out[score] = softmax(z[score], shared)
            continue
        for g in np.unique(groups[score]):
            rows, own = score & (groups == g), fit & (groups == g)
            out[rows] = softmax(z[rows], fit_temperature(z[own], y[own]) if own.sum() >= MIN_BAND else shared)
    return out


def main() -> int:
    for folder in sorted((REPO / "checkpoints").iterdir()):
        pack = ResultsPack.load(folder / "results")
        if "pred_quality" not in pack.predictions:
            continue  # no quality head: nothing to group by
        z = np.log(np.clip(pack_probabilities(pack)["raw"], 1e-12, 1))  # the logits, up to a per-row constant
        y, quality = pack.predictions["diagnosis"].to_numpy(), pack.predictions["pred_quality"].to_numpy()
        worst = quality == quality.min()
        for kind, groups in (("one temperature", None), ("one per predicted quality", quality)):
            rng = np.random.default_rng(0)
            scores = []
            for _ in range(REPEATS):
                p = held_out(z, y, groups, rng)
                log_loss = -np.log(p[np.arange(len(y)), y])
                scores.append((log_loss.mean(), log_loss[worst].mean(), expected_calibration_error(y, p),
                               expected_calibration_error(y[worst], p[worst])))
            nll, nll_worst, ece, ece_worst = np.mean(scores, axis=0)
            print(f"{folder.name:22s} {kind:26s} NLL {nll:.4f} (worst quality {nll_worst:.4f})  "
                  f"ECE {ece:.4f} (worst quality {ece_worst:.4f}, {worst.sum()} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
