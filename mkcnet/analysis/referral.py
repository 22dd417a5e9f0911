"""Quality-aware referral (selective prediction): diagnosis error against the share of images
the model diagnoses when the rest is referred to a person.

Images are ranked by a trust score and the least trusted are referred first. Three rules:
  - "quality": refer by predicted image quality (P of the best quality class): the usual
    practice of rejecting low-quality images, which the paper argues wastes data;
  - "confidence": refer by the (calibrated) diagnosis confidence;
  - "both": by the product of the two.
A curve point at coverage c = k/N is the error rate among the k most trusted images (ties in the
score keep the table's order). AURC is the mean risk over the N points.

`operating_points` chooses, per rule, the share to refer so that the diagnosis error among the
images kept stays ≤ ε with probability ≥ 1 − δ (Learn then Test on the pack's split, normally the
validation split: `mkcnet.trust.conformal.risk_controlled_threshold`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mkcnet.inference.results import ResultsPack
from mkcnet.trust.conformal import OperatingPoint, risk_controlled_threshold

RULES = ("quality", "confidence", "both")


def risk_coverage(correct: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """coverage (k/N) and risk (errors among the k highest scores / k) for k = 1..N."""
    correct = np.asarray(correct, bool)
    order = np.argsort(-np.asarray(score, float), kind="stable")
    errors = np.cumsum(~correct[order])
    k = np.arange(1, len(correct) + 1)
    return pd.DataFrame({"coverage": k / len(correct), "risk": errors / k})


def trust_scores(pack: ResultsPack) -> dict[str, np.ndarray]:
    """Each referral rule's score per image of a results pack (rules a model cannot use are absent)."""
    confidence = pack.probabilities("diagnosis").max(axis=1)
    scores = {"confidence": confidence}
    quality = pack.probabilities("quality")
    if quality is not None:
        scores["quality"] = quality[:, -1]  # P(best quality class)
        scores["both"] = quality[:, -1] * confidence
    return {rule: scores[rule] for rule in RULES if rule in scores}


def referral_curves(pack: ResultsPack) -> pd.DataFrame:
    """Risk-coverage curves of every rule the pack's model supports, with `rule` and `aurc` columns."""
    known = pack.predictions["diagnosis"].to_numpy() >= 0
    correct = pack.predictions["correct"].to_numpy()[known].astype(bool)
    frames = []
    for rule, score in trust_scores(pack).items():
        curve = risk_coverage(correct, score[known])
        frames.append(curve.assign(rule=rule, aurc=curve["risk"].mean()))
    return pd.concat(frames, ignore_index=True)


def operating_points(pack: ResultsPack, epsilon: float = 0.05, delta: float = 0.1) -> pd.DataFrame:
    """Per rule the certified trust threshold: columns rule, epsilon, delta, threshold (inf: none
    found, refer all), n, kept, errors, share_kept, error (on the pack's own images).

        points = operating_points(load_pack("checkpoints/ct-iqad-mkcnet"), epsilon=0.05, delta=0.1)
    """
    known = pack.predictions["diagnosis"].to_numpy() >= 0
    correct = pack.predictions["correct"].to_numpy()[known].astype(bool)
    rows = []
    for rule, score in trust_scores(pack).items():
        point: OperatingPoint = risk_controlled_threshold(correct, score[known], epsilon, delta)
        rows.append({"rule": rule, "epsilon": epsilon, "delta": delta, "threshold": point.threshold, "n": point.n,
                     "kept": point.kept, "errors": point.errors, "share_kept": point.share_kept, "error": point.error})
    return pd.DataFrame(rows)


def describe_point(row: pd.Series) -> str:
    """One operating point in words."""
    if not np.isfinite(row["threshold"]):
        return (f"refer by {row['rule']}: no share can be certified at error ≤ {row['epsilon']:.0%} "
                f"(with {1 - row['delta']:.0%} confidence) on {row['n']} images: refer every image")
    return (f"refer by {row['rule']}: diagnose the {row['share_kept']:.0%} with score ≥ {row['threshold']:.3f}, "
            f"refer {1 - row['share_kept']:.0%}; error among those kept ≤ {row['epsilon']:.0%} with "
            f"{1 - row['delta']:.0%} confidence ({row['errors']} of {row['kept']} wrong here)")


def referral_figure(curves: dict[str, pd.DataFrame], points: dict[str, pd.DataFrame] | None = None) -> go.Figure:
    """One line per (run, rule): diagnosis error against the share diagnosed; with `points`, each
    certified operating point as a marker and ε as a horizontal line."""
    fig = go.Figure()
    dashes = {"quality": "dot", "confidence": "dash", "both": "solid"}
    symbols = {"quality": "circle", "confidence": "diamond", "both": "square"}
    for run, table in curves.items():
        for rule, part in table.groupby("rule", sort=False):
            fig.add_scatter(x=part["coverage"], y=part["risk"], mode="lines", line={"dash": dashes[rule]},
                            name=f"{run}: refer by {rule} (AURC {part['aurc'].iloc[0]:.3f})", legendgroup=run)
    for run, table in (points or {}).items():
        found = table[np.isfinite(table["threshold"])]
        fig.add_scatter(x=found["share_kept"], y=found["error"], mode="markers", legendgroup=run,
                        marker={"size": 10, "symbol": [symbols[r] for r in found["rule"]], "line": {"width": 1}},
                        name=f"{run}: certified operating points", text=found["rule"],
                        hovertemplate="refer by %{text}: diagnose %{x:.0%}, error %{y:.1%}<extra></extra>")
    if points:
        first = next(iter(points.values()))
        if len(first):
            eps, delta = first["epsilon"].iloc[0], first["delta"].iloc[0]
            fig.add_hline(y=eps, line={"dash": "dot", "color": "grey"},
                          annotation_text=f"ε = {eps:.0%} (guaranteed with {1 - delta:.0%} confidence)")
    fig.update_layout(template="plotly_white",  # as every figure of the project
                      xaxis_title="share of images diagnosed (the rest referred)", yaxis_title="diagnosis error",
                      xaxis_range=[0, 1], legend={"orientation": "h", "y": -0.25}, margin={"t": 30},
                      title="Quality-aware referral: risk against coverage")
    return fig
