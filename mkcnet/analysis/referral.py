"""Quality-aware referral (selective prediction): diagnosis error against the share of images
the model diagnoses when the rest is referred to a person.

Images are ranked by a trust score and the least trusted are referred first. Three rules:
  - "quality": refer by predicted image quality (P of the best quality class): the usual
    practice of rejecting low-quality images, which the paper argues wastes data;
  - "confidence": refer by the (calibrated) diagnosis confidence;
  - "both": by the product of the two.
A curve point at coverage c = k/N is the error rate among the k most trusted images (ties in the
score keep the table's order). AURC is the mean risk over the N points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mkcnet.inference.results import ResultsPack

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


def referral_figure(curves: dict[str, pd.DataFrame]) -> go.Figure:
    """One line per (run, rule): diagnosis error against the share diagnosed."""
    fig = go.Figure()
    dashes = {"quality": "dot", "confidence": "dash", "both": "solid"}
    for run, table in curves.items():
        for rule, part in table.groupby("rule", sort=False):
            fig.add_scatter(x=part["coverage"], y=part["risk"], mode="lines", line={"dash": dashes[rule]},
                            name=f"{run}: refer by {rule} (AURC {part['aurc'].iloc[0]:.3f})")
    fig.update_layout(xaxis_title="share of images diagnosed (the rest referred)", yaxis_title="diagnosis error",
                      xaxis_range=[0, 1], legend={"orientation": "h", "y": -0.25}, margin={"t": 30},
                      title="Quality-aware referral: risk against coverage")
    return fig
