"""Robustness to the share of low-quality images: diagnosis metrics as a function of the LQ
ratio r of the evaluation set, from a results pack's saved per-image predictions.

For each r, the evaluation set is resampled `repeats` times to a fixed `size` with
round(r·size) LQ images and the rest HQ (LQ: known quality below the top class). The curve is
the mean over draws; the band is the central 95 % of the draws (percentiles).

`size` defaults to min(#LQ, #HQ): the largest size at which every r, 0 and 1 included, can be
drawn without repeating an image. Draws are then subsets of a finite test set, so the band
shows how much the metric moves with *which* test images are drawn; at r = 1 (or r = 0) the
draw may hold the whole group and the band closes. With `replace=True` every draw is a
bootstrap sample instead, and the band estimates the metric's sampling uncertainty. A group
smaller than its share of `size` is always drawn with replacement; the table's
`attrs["replaced"]` then says so.

Each draw is scored as `mkcnet.metrics.classification_metrics` (what `mkcnet evaluate` reports)
scores it, by `mkcnet.metrics.draw_metrics`: all draws of a ratio at once in numpy, so the default
11 ratios × 200 draws take ~0.1 s a run (scikit-learn, a call per draw, took ~3 ms a draw: 7-14 s
a run on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import DEFAULT_PLOTLY_COLORS, unlabel_rgb

from mkcnet.data.shift import draw_mix, split_sizes
from mkcnet.errors import UserError
from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import draw_metrics, quality_groups

METRICS = ("auc", "acc", "f1")


def lq_ratio_draws(pack: ResultsPack, ratios: Sequence[float] = np.linspace(0, 1, 11), size: int | None = None,
                   repeats: int = 200, seed: int = 0, num_quality: int | None = None,
                   replace: bool = False) -> pd.DataFrame:
    """One row per (ratio, draw, metric): columns ratio, draw, metric, value."""
    table = pack.predictions
    labels, probs = table["diagnosis"].to_numpy(), pack.probabilities("diagnosis")
    lq, hq = quality_groups(table["quality"].to_numpy(), num_quality or pack.num_classes("quality"))
    if not (len(lq) and len(hq)):
        raise UserError(f"the LQ-ratio test needs both HQ and LQ images; the pack has {len(hq)} HQ, {len(lq)} LQ")
    size = size or min(len(lq), len(hq))
    ratios = np.round(np.asarray(ratios, dtype=float), 6)  # exact keys for grouping (linspace gives 0.30000000000000004)
    short = any(n_lq > len(lq) or n_hq > len(hq) for n_lq, n_hq in (split_sizes(r, size) for r in ratios))
    values = []
    for ratio in ratios:
        # A stream per ratio: a ratio's draws do not depend on which other ratios are asked for.
        rng = np.random.default_rng([seed, int(ratio * 1_000_000)])
        index = np.array([draw_mix(lq, hq, ratio, size, rng, replace) for _ in range(repeats)], np.intp)
        index = index.reshape(repeats, size)
        scores = draw_metrics(labels[index], probs[index])  # every draw of this ratio at once
        values.append(np.stack([scores[metric] for metric in METRICS], axis=1))  # repeats × metrics
    draws = pd.DataFrame({"ratio": np.repeat(ratios, repeats * len(METRICS)),
                          "draw": np.tile(np.repeat(np.arange(repeats), len(METRICS)), len(ratios)),
                          "metric": np.tile(METRICS, len(ratios) * repeats),
                          "value": np.concatenate(values).ravel() if values else np.empty(0)})
    draws.attrs = {"size": size, "replaced": replace or short}
    return draws


def summarise(draws: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean and central `level` percentile band per (ratio, metric): ratio, metric, mean, low, high.
    Draws whose metric is undefined (one diagnosis class only) are left out."""
    tail = (1 - level) / 2
    grouped = draws.groupby(["ratio", "metric"], sort=True)["value"]
    curves = grouped.agg(mean="mean", low=partial(pd.Series.quantile, q=tail),
                         high=partial(pd.Series.quantile, q=1 - tail)).reset_index()
    curves.attrs = dict(draws.attrs)
    return curves


def lq_ratio_curves(pack: ResultsPack, ratios: Sequence[float] = np.linspace(0, 1, 11), size: int | None = None,
                    repeats: int = 200, seed: int = 0, num_quality: int | None = None,
                    replace: bool = False) -> pd.DataFrame:
    """Columns ratio, metric ("auc", "acc", "f1"), mean, low, high (95 % percentile band)."""
    return summarise(lq_ratio_draws(pack, ratios, size, repeats, seed, num_quality, replace))


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = unlabel_rgb(colour)
    return f"rgba({r:.0f},{g:.0f},{b:.0f},{alpha})"


def ood_figure(curves: dict[str, pd.DataFrame], metric: str = "auc") -> go.Figure:
    """One line (mean) and one shaded band per run name."""
    fig = go.Figure()
    tables = {name: table[table["metric"] == metric].sort_values("ratio") for name, table in curves.items()}
    colours = {name: DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)] for i, name in enumerate(tables)}
    for name, t in tables.items():  # every band first, so no band covers another run's line
        fig.add_trace(go.Scatter(x=[*t["ratio"], *t["ratio"][::-1]], y=[*t["high"], *t["low"][::-1]],
                                 fill="toself", fillcolor=_rgba(colours[name], 0.15), line={"width": 0},
                                 hoverinfo="skip", showlegend=False, legendgroup=name))
    for name, t in tables.items():
        fig.add_trace(go.Scatter(x=t["ratio"], y=t["mean"], mode="lines+markers", name=name,
                                 line={"color": colours[name]}, legendgroup=name,
                                 customdata=t[["low", "high"]], hovertemplate=(
                                     f"{name}<br>r=%{{x:.2f}}  {metric.upper()} %{{y:.3f}}"
                                     "<br>95% band %{customdata[0]:.3f}–%{customdata[1]:.3f}<extra></extra>")))
    fig.update_layout(template="plotly_white", xaxis_title="share of LQ images in the test set (r)",
                      yaxis_title=f"diagnosis {metric.upper()}", legend_title="run",
                      title=f"Diagnosis {metric.upper()} vs. LQ ratio (mean, 95 % band over draws)")
    return fig
