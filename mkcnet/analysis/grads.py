"""Task-gradient cosines over training (logged by the trainer as `grad_cos.*` in history.jsonl)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mkcnet.files import read_jsonl

PAIRS = {"grad_cos.diagnosis_quality": "diagnosis vs quality", "grad_cos.diagnosis_auxiliary": "diagnosis vs auxiliary"}


def gradient_history(runs: Sequence[tuple[str, Path]]) -> pd.DataFrame:
    """Columns run, epoch, pair, cosine for (name, run directory) pairs; runs that share a name
    (e.g. the seeds of one method) are averaged per epoch. Runs without the keys add no rows."""
    rows = []
    for name, run_dir in runs:
        log = Path(run_dir) / "history.jsonl"
        for record in read_jsonl(log) if log.is_file() else []:
            rows += [(name, record["epoch"], label, record[key]) for key, label in PAIRS.items() if key in record]
    table = pd.DataFrame(rows, columns=["run", "epoch", "pair", "cosine"])
    return table.groupby(["run", "pair", "epoch"], sort=False, as_index=False)["cosine"].mean()


def grads_figure(table: pd.DataFrame, title: str = "Task-gradient cosine on the shared backbone") -> go.Figure:
    """One panel per pair, one line per run; below zero the two losses pull the backbone apart."""
    fig = px.line(table, x="epoch", y="cosine", color="run", facet_col="pair", markers=True, template="plotly_white",
                  category_orders={"pair": [p for p in PAIRS.values() if p in set(table["pair"])]}, title=title)
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_xaxes(tick0=1, dtick=max(1, round(table["epoch"].max() / 10)))  # whole epochs only
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))  # "pair=x" → "x"
    return fig
