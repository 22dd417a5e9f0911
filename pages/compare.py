"""Compare: the same image through the vanilla baseline and MKCNet of one data set, side by
side (probabilities, readings, branch CAMs), and the benchmark table. API: /compare.
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pandas as pd

from mkcnet.errors import UserError
from mkcnet.progress import scaled
from mkcnet.project import find_project_home
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.imaging import load_for
from mkcnet.workbench.ui import (
    PROGRESS,
    PageColumns,
    PredictionPanel,
    first_example,
    image_input,
    page_frame,
    panel_view,
    prediction_panel,
    progress_report,
    reading_settings,
    refresh_examples,
    wire,
)

TITLE = "Compare"
SIDES = ("vanilla", "mkcnet")
RESULTS = ("docs", "RESULTS.md")  # in the project home


def bench_markdown(bench: Path | None) -> tuple[Path, str] | None:
    """The Table 2 of a `mkcnet bench` output folder (the settings' `bench`, MKCNET_BENCH), else
    the project's docs/RESULTS.md: (file, Markdown). Figures are left out: their relative paths do
    not resolve inside the app."""
    home = find_project_home()
    for path in (Path(bench) / "table.md" if bench else None, home.joinpath(*RESULTS) if home else None):
        if path is not None and path.is_file():
            return path, re.sub(r"!\[([^\]]*)\]\([^)]*\)", rf"*(figure “\1”: see {path.name})*", path.read_text())
    return None


def comparable(context: Workbench) -> list[str]:
    """Data sets with both a vanilla and an MKCNet model."""
    return [d for d in context.zoo.datasets() if all(context.zoo.names(d, m) for m in SIDES)]


# (column, metric key) of the tables below: the paper's AUC and hard AUC, overall and per quality group
COLUMNS = (("AUC", "diagnosis.auc"), ("hard AUC", "diagnosis.auc_hard"), ("ACC", "diagnosis.acc"),
           ("F1", "diagnosis.f1"), ("AUC on HQ", "diagnosis.HQ.auc"), ("AUC on LQ", "diagnosis.LQ.auc"),
           ("hard AUC on LQ", "diagnosis.LQ.auc_hard"), ("quality ACC", "quality.acc"))
UNDEFINED = "—"  # a metric with no images in its group, or one class only among them


def metric_cells(metrics: dict[str, float]) -> dict[str, object]:
    """A table row's metric cells: rounded, or "—" where the metric is undefined (NaN)."""
    values = {label: float(metrics.get(key, float("nan"))) for label, key in COLUMNS}
    return {label: round(v, 3) if v == v else UNDEFINED for label, v in values.items()}


def bench_table(context: Workbench) -> pd.DataFrame:
    """Validation metrics of the zoo's models, from their cards (the bench table when the
    project has no docs/RESULTS.md)."""
    rows = []
    for name in context.zoo.names():
        entry = context.zoo.entry(name)
        m = entry.card.get("metrics", {})
        if m:
            rows.append({"model": entry.title, "data set": entry.dataset, "method": entry.method, **metric_cells(m)})
    return pd.DataFrame(rows)


class CompareEvents:
    """The page's handlers, over the workbench context; `build` wires them."""

    def __init__(self, context: Workbench, panels: list[PredictionPanel]):
        self.context, self.panels = context, panels

    def pair(self, name: str) -> str:
        if name not in comparable(self.context):
            raise UserError(f"no vanilla/MKCNet pair for data set {str(name)[:80]!r}")
        return name

    def compare(self, file: str | None, name: str, cam_method: str, weight: float, request: gr.Request):
        if not file:
            return None, *(None for panel in self.panels for _ in panel.outputs())
        zoo, session = self.context.zoo, self.context.session(request, file)
        values, display = [], None
        for side, panel in zip(SIDES, self.panels):
            model = zoo.model(zoo.names(self.pair(name), side)[0])
            prepared = load_for(model, file, self.context.images)
            display = session.image_file(prepared.display)
            values += panel.values(panel_view(model, prepared, cam_method, weight, session))
        return display, *values

    def change_dataset(self, name: str, request: gr.Request):
        entry = self.context.zoo.entry(self.context.zoo.names(self.pair(name), "mkcnet")[0])
        return refresh_examples(self.context, entry, request)

    def show_reliability(self, name: str):
        from mkcnet.analysis.reliability import reliability_figure

        zoo = self.context.zoo
        packs = {zoo.entry(n).title: zoo.pack(n) for side in SIDES for n in zoo.names(self.pair(name), side)[:1]}
        figure = reliability_figure(packs)
        figure.update_layout(height=420)
        return figure

    def on_data(self, name: str, request: gr.Request, progress=PROGRESS) -> pd.DataFrame:
        """Both models of the data set evaluated on the visitor's data set: the benchmark's metrics
        on their images, overall and per quality group. The packs join the visitor's runs (the
        Embeddings and Out-of-distribution pages show them too)."""
        session = self.context.session(request)
        root = self.context.data_root(session)
        if root is None:
            raise UserError("bring a data set first: upload one under “Your data set”"
                            + ("" if self.context.hosting.hosted else " or name a data folder"))
        rows = []
        report = progress_report(progress)
        for i, side in enumerate(SIDES):
            session.check_budget()
            model_name = self.context.zoo.names(self.pair(name), side)[0]
            title = self.context.zoo.entry(model_name).title
            part = scaled(report, i / len(SIDES), (i + 1) / len(SIDES), f"{title}: ")
            metrics = session.packs.entry(session.packs.evaluate(model_name, root, report=part)).pack.header["metrics"]
            rows.append({"model": self.context.zoo.entry(model_name).title, "images": int(metrics["diagnosis.n"]),
                         "HQ / LQ": f"{metrics.get('diagnosis.HQ.n', 0):.0f} / {metrics.get('diagnosis.LQ.n', 0):.0f}",
                         **metric_cells(metrics)})
        return pd.DataFrame(rows)

    def open_first(self, shown_paths: list[str], request: gr.Request) -> str | None:
        return first_example(self.context, shown_paths, request)


def build(context: Workbench, root: gr.Blocks | None = None) -> gr.Blocks:
    datasets = comparable(context)
    with page_frame(TITLE, "Compare: vanilla vs. MKCNet",
                    "The same image through both models of a data set. The vanilla model has one branch and cannot "
                    "judge quality; MKCNet adds the quality and ω branches.", context, root=root) as (page, status_md, linked):
        with gr.Row(equal_height=False, elem_classes=[PageColumns.ROW]):
            with gr.Column(scale=1, min_width=340, elem_classes=[PageColumns.CONTROLS]):
                with gr.Column(elem_classes=[PageColumns.CHOOSE]):
                    view = gr.Group()
                    dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None, label="Data set")
                    entry = context.zoo.entry(context.zoo.names(datasets[0], "mkcnet")[0]) if datasets else None
                    source = image_input(context, status_md, entry and entry.modality,
                                         names=entry and entry.label_names)
                with gr.Column(elem_classes=[PageColumns.TUNE]):
                    method, opacity, data_changed, viewed = reading_settings(context, status_md, linked, view)
            with gr.Column(scale=2, min_width=600, elem_classes=[PageColumns.RESULTS]):
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
        gr.Dataframe(bench_table(context), interactive=False, wrap=True, elem_classes=["bench-table"])
        gr.Markdown(f"### On your data set\nBoth models of the chosen data set on the images of your data set "
                    f"(its val.csv; bring it under “Your data set”). {UNDEFINED}: not defined (no image in the "
                    "group, or one class only). The results join your runs on the Embeddings and "
                    "Out-of-distribution pages.")
        evaluate = gr.Button("Evaluate both on my data set")
        on_data = gr.Dataframe(pd.DataFrame(columns=["model", "images", "HQ / LQ", *(c for c, _ in COLUMNS)]),
                               label="Both models on your data set", interactive=False, wrap=True,
                               elem_id="on-your-data")
        bench = bench_markdown(context.settings.bench)
        if bench is not None:
            with gr.Accordion(f"The project's benchmark ({bench[0].name})", open=False):
                gr.Markdown(bench[1])

        events = CompareEvents(context, panels)
        wire([page.load, dataset.change], events.show_reliability, dataset, [reliability, status_md],
             api_name="reliability")
        outputs = [preview, *panels[0].outputs(), *panels[1].outputs(), status_md]
        compared = wire([source.file.change, dataset.change, method.change, opacity.release], events.compare,
                        [source.file, dataset, method, opacity], outputs, api_name="compare", trigger_mode="always_last")
        reread = wire(viewed.then, events.compare, [source.file, dataset, method, opacity], outputs,
                      api_visibility="private", trigger_mode="always_last")  # the other view's words
        for panel in panels:
            panel.restyle_after(compared, reread)
        examples = [source.gallery, source.shown, status_md]
        wire(dataset.change, events.change_dataset, dataset, examples, api_visibility="private")
        for changed in data_changed:  # the visitor's data set: its images become the examples
            wire(changed.then, events.change_dataset, dataset, examples, api_visibility="private")
        wire(page.load, events.open_first, source.shown, source.file, api_visibility="private")
        wire(evaluate.click, events.on_data, dataset, [on_data, status_md], api_name="compare_on_data",
             concurrency_limit=1)
    return page
