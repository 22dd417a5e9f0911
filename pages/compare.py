"""Compare: the same image through the vanilla baseline and MKCNet of one data set, side by
side (probabilities, readings, branch CAMs), and the benchmark table. API: /compare.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import gradio as gr
import pandas as pd

from mkcnet.errors import UserError
from mkcnet.project import find_project_home
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.imaging import load_for
from mkcnet.workbench.ui import (
    cam_controls,
    data_source,
    first_example,
    guarded,
    image_input,
    page_frame,
    panel_values,
    prediction_panel,
    refresh_examples,
    status,
)

TITLE = "Compare"
SIDES = ("vanilla", "mkcnet")
RESULTS = ("docs", "RESULTS.md")  # in the project home


def bench_markdown() -> tuple[Path, str] | None:
    """The Table 2 of a `mkcnet bench` output folder named by MKCNET_BENCH, else the project's
    docs/RESULTS.md: (file, Markdown). Figures are left out: their relative paths do not resolve
    inside the app."""
    bench = os.environ.get("MKCNET_BENCH")
    home = find_project_home()
    for path in (Path(bench) / "table.md" if bench else None, home.joinpath(*RESULTS) if home else None):
        if path is not None and path.is_file():
            return path, re.sub(r"!\[([^\]]*)\]\([^)]*\)", rf"*(figure “\1”: see {path.name})*", path.read_text())
    return None


def comparable(context: Workbench) -> list[str]:
    """Data sets with both a vanilla and an MKCNet model."""
    return [d for d in context.zoo.datasets() if all(context.zoo.names(d, m) for m in SIDES)]


def bench_table(context: Workbench) -> pd.DataFrame:
    """Validation metrics of the zoo's models, from their cards (the bench table when the
    project has no docs/RESULTS.md)."""
    rows = []
    for name in context.zoo.names():
        entry = context.zoo.entry(name)
        m = entry.card.get("metrics", {})
        if not m:
            continue
        rows.append({"model": entry.title, "data set": entry.dataset, "method": entry.method,
                     **{label: round(m[key], 3) for label, key in (
                         ("AUC", "diagnosis.auc"), ("ACC", "diagnosis.acc"), ("F1", "diagnosis.f1"),
                         ("AUC on HQ", "diagnosis.HQ.auc"), ("AUC on LQ", "diagnosis.LQ.auc"),
                         ("quality ACC", "quality.acc")) if key in m and m[key] == m[key]}})
    return pd.DataFrame(rows)


def build(context: Workbench, root: gr.Blocks | None = None) -> gr.Blocks:
    datasets = comparable(context)
    with page_frame(TITLE, "Compare: vanilla vs. MKCNet",
                    "The same image through both models of a data set. The vanilla model has one branch and cannot "
                    "judge quality; MKCNet adds the quality and ω branches.", root=root) as (page, status_md):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None, label="Data set")
                modality = context.zoo.entry(context.zoo.names(datasets[0], "mkcnet")[0]).modality if datasets else None
                source = image_input(context, status_md, modality)
                method, opacity = cam_controls()
                with gr.Accordion("Your data set", open=False):
                    data_changed = data_source(context, page, status_md)
            with gr.Column(scale=3, min_width=600):
                preview = gr.Image(label="What the models see", height=200, interactive=False, buttons=[])
                with gr.Row(equal_height=False):
                    with gr.Column():
                        panels = [prediction_panel("Vanilla")]
                    with gr.Column():
                        panels.append(prediction_panel("MKCNet"))
        gr.Markdown("### Calibration\nAccuracy against confidence on each model's validation split, raw softmax "
                    "(dashed) and temperature-scaled (solid): the closer to the diagonal, the more a probability "
                    "means what it says. The pages show the calibrated probabilities.")
        reliability = gr.Plot(label="Reliability diagram", elem_id="reliability-plot")
        gr.Markdown("### Benchmark\nValidation metrics of these models, from their model cards:")
        gr.Dataframe(bench_table(context), interactive=False, wrap=True)
        bench = bench_markdown()
        if bench is not None:
            with gr.Accordion(f"The project's benchmark ({bench[0].name})", open=False):
                gr.Markdown(bench[1])

        @guarded(10)
        def compare(file: str | None, name: str, cam_method: str, weight: float, request: gr.Request):
            if not file:
                return *[None] * 9, status()
            if name not in comparable(context):
                raise UserError(f"no vanilla/MKCNet pair for data set {str(name)[:80]!r}")
            session = context.session(request)
            values, display = [], None
            for side in SIDES:
                model = context.zoo.model(context.zoo.names(name, side)[0])
                prepared = load_for(model, file, context.images)
                display = session.image_file(prepared.display)
                values += panel_values(model, prepared, cam_method, weight, session)[1]
            return display, *values, status()

        @guarded(3)
        def change_dataset(name: str, request: gr.Request):
            if name not in comparable(context):
                raise UserError(f"no vanilla/MKCNet pair for data set {str(name)[:80]!r}")
            entry = context.zoo.entry(context.zoo.names(name, "mkcnet")[0])
            gallery, shown = refresh_examples(context, entry.modality, request)
            return gallery, shown, status()

        @guarded(2)
        def show_reliability(name: str):
            from mkcnet.analysis.reliability import reliability_figure

            if name not in comparable(context):
                raise UserError(f"no vanilla/MKCNet pair for data set {str(name)[:80]!r}")
            packs = {context.zoo.entry(n).title: context.zoo.pack(n) for side in SIDES
                     for n in context.zoo.names(name, side)[:1]}
            figure = reliability_figure(packs)
            figure.update_layout(height=420)
            return figure, status()

        gr.on([page.load, dataset.change], show_reliability, dataset, [reliability, status_md], api_name="reliability")
        outputs = [preview, *panels[0].outputs, *panels[1].outputs, status_md]
        gr.on([source.file.change, dataset.change, method.change, opacity.release], compare,
              [source.file, dataset, method, opacity], outputs, api_name="compare", trigger_mode="always_last")
        dataset.change(change_dataset, dataset, [source.gallery, source.shown, status_md], api_visibility="private")
        for changed in data_changed:  # the visitor's data set: its images become the examples
            changed.then(change_dataset, dataset, [source.gallery, source.shown, status_md], api_visibility="private")
        def open_first(shown_paths: list[str], request: gr.Request) -> str | None:
            return first_example(context, shown_paths, request)

        page.load(open_first, source.shown, source.file, api_visibility="private")
    return page
