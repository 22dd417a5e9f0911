"""Out-of-distribution: how the diagnosis holds up as the share of low-quality images grows.

Curves (mean and 95 % band over resampled test sets) come from `mkcnet.analysis.ood` on the
runs' per-image predictions: bundled ones are precomputed, others are computed on first use.
The slider picks a ratio; the table reads every run off the curves there. Below, quality-aware
referral: risk-coverage curves (`mkcnet.analysis.referral`). API: /ood, /referral.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from mkcnet.errors import UserError
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.packs import PackStore
from mkcnet.workbench.ui import PROGRESS, add_typed_run, page_frame, server_checked, wire

TITLE = "Out-of-distribution"
METRICS = [("AUC", "auc"), ("ACC", "acc"), ("F1", "f1")]


def runs_of(packs: PackStore, dataset: str | None) -> list[tuple[str, str]]:
    return packs.choices(dataset)


def at_ratio(curves: dict[str, pd.DataFrame], metric: str, ratio: float) -> pd.DataFrame:
    """Each run's metric at the grid ratio nearest `ratio`, and its change from r = 0."""
    rows = []
    for name, table in curves.items():
        t = table[table["metric"] == metric].sort_values("ratio")
        here = t.iloc[int((t["ratio"] - ratio).abs().argmin())]
        clean = t.iloc[0]
        rows.append({"run": name, "r": round(float(here["ratio"]), 2), metric.upper(): round(float(here["mean"]), 3),
                     "95% band": f"{here['low']:.3f}–{here['high']:.3f}",
                     f"change from r={clean['ratio']:.0f}": round(float(here["mean"] - clean["mean"]), 3)})
    return pd.DataFrame(rows)


def picked_runs(keys) -> list[str]:
    """The runs a client picked: a non-empty list of run keys (a client may send anything)."""
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str) for k in keys):
        raise UserError("the runs are a list of run names")
    if not keys:
        raise UserError("pick at least one run")
    return list(keys)


class OodEvents:
    """The page's handlers, over the workbench context; `build` wires them."""

    def __init__(self, context: Workbench):
        self.context = context

    def show(self, keys: list[str], which: str, r: float, request: gr.Request, progress=PROGRESS):
        from mkcnet.analysis.ood import ood_figure

        keys = picked_runs(keys)
        packs = self.context.session(request).packs
        curves = {}
        for i, k in enumerate(keys):  # a run without stored curves: 11 ratios × 200 draws (~0.1 s)
            label = packs.entry(k).label
            progress(i / len(keys), desc=f"LQ-ratio curves: {label}")
            curves[label] = packs.ood_curves(str(k))
        figure = ood_figure(curves, which)
        figure.add_vline(x=float(r), line_dash="dot", line_color="grey")
        figure.update_layout(height=460, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                             legend={"orientation": "h", "y": -0.2})
        return figure, at_ratio(curves, which, float(r))

    def show_referral(self, keys: list[str], epsilon: float, delta: float, request: gr.Request):
        from mkcnet.analysis.referral import describe_point, operating_points, referral_curves, referral_figure

        keys = picked_runs(keys)
        if not all(isinstance(v, int | float) and 0 < v < 1 for v in (epsilon, delta)):
            raise UserError("the error bound ε and the risk δ must lie between 0 and 1")
        packs = self.context.session(request).packs
        entries = {packs.entry(k).label: packs.entry(k).pack for k in keys}
        curves = {label: referral_curves(pack) for label, pack in entries.items()}
        points = {label: operating_points(pack, float(epsilon), float(delta)) for label, pack in entries.items()}
        figure = referral_figure(curves, points)
        figure.update_layout(height=460, margin={"l": 10, "r": 10, "t": 50, "b": 10})
        table = pd.DataFrame([{"run": label, "refer by": row["rule"], "diagnosed": f"{row['share_kept']:.0%}"
                               if np.isfinite(row["threshold"]) else "none (refer all)",
                               "operating point": describe_point(row)}
                              for label, frame in points.items() for _, row in frame.iterrows()])
        return figure, table

    def pick_dataset(self, name: str, request: gr.Request):
        choices = runs_of(self.context.session(request).packs, name)
        return gr.update(choices=choices, value=[k for _, k in choices])

    def add_run(self, directory: str, selected: list[str], request: gr.Request):
        session, key = add_typed_run(self.context, directory, request)
        return gr.update(choices=session.packs.choices(), value=[*selected, key]), ""


def build(context: Workbench, root: gr.Blocks | None = None) -> gr.Blocks:
    datasets = context.zoo.datasets()
    first = datasets[0] if datasets else None
    with page_frame(TITLE, "Out-of-distribution: more low-quality images",
                    "Each run's validation predictions are resampled into test sets with a share *r* of low-quality "
                    "(LQ) images. A quality-aware model should lose less as *r* grows.", context,
                    root=root) as (page, status_md, linked):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                dataset = server_checked(datasets, value=first, label="Data set")
                start = [k for _, k in runs_of(context.packs, first)]
                # Custom values: runs this visitor added; looked up in their session, never as a path.
                runs = server_checked(runs_of(context.packs, first), value=start, multiselect=True, label="Runs")
                metric = gr.Radio(METRICS, value="auc", label="Metric")
                ratio = gr.Slider(0, 1, value=0.5, step=0.1, label="LQ ratio r")
                if not context.hosting.hosted:
                    with gr.Accordion("Add a run directory", open=False):
                        run_dir = gr.Textbox(label="Run directory or results-pack folder on this machine",
                                             placeholder="runs/ct-iqad/multitask")
                        add = gr.Button("Add run")
            with gr.Column(scale=2, min_width=420):
                plot = gr.Plot(label="Diagnosis metric vs. LQ ratio")
                table = gr.Dataframe(label="At the chosen ratio", interactive=False)
                gr.Markdown("### Quality-aware referral\nRefer the least trusted images to a person and diagnose "
                            "the rest: the error among those diagnosed, against their share. Referring by "
                            "predicted quality is the usual *reject LQ images*; by calibrated confidence, or "
                            "by both. A lower curve (smaller AURC) refers better. The markers are operating "
                            "points with a guarantee: diagnosing the images above each point's threshold keeps "
                            "the error among them ≤ ε with probability ≥ 1 − δ (fitted on the run's validation "
                            "images; new images like them keep it).")
                with gr.Row():
                    epsilon = gr.Slider(0.01, 0.2, value=0.05, step=0.01, label="Error bound ε among those diagnosed")
                    delta = gr.Slider(0.01, 0.5, value=0.1, step=0.01, label="Risk δ (the bound holds with 1 − δ)")
                referral = gr.Plot(label="Diagnosis error vs. share diagnosed", elem_id="referral-plot")
                # Widths set: left to itself, the long last column was drawn wider than the page and cut off.
                points = gr.Dataframe(label="Certified operating points (Learn-then-Test on the run's validation "
                                            "images)", interactive=False, wrap=True,
                                      column_widths=["22%", "16%", "15%", "47%"])

        events = OodEvents(context)
        wire([page.load, runs.change, metric.change, ratio.release], events.show, [runs, metric, ratio],
             [plot, table, status_md], api_name="ood", trigger_mode="always_last")
        wire([page.load, runs.change, epsilon.release, delta.release], events.show_referral, [runs, epsilon, delta],
             [referral, points, status_md], api_name="referral", trigger_mode="always_last")
        wire(dataset.change, events.pick_dataset, dataset, [runs, status_md], api_visibility="private")
        # The runs this visitor evaluated on another page join the list once the page knows them.
        wire(linked.then, events.pick_dataset, dataset, [runs, status_md], api_visibility="private")
        if not context.hosting.hosted:
            wire(add.click, events.add_run, [run_dir, runs], [runs, run_dir, status_md], api_visibility="private")
    return page
