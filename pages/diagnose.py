"""Diagnose: one image, one model — probabilities, a plain-language reading, a CAM per branch,
and a what-if panel that degrades the image with the simulator and shows what moves.

API endpoints: /predict (probabilities and reading), /cam (the branch CAMs), /batch (a table
for several images or a zip, and its CSV) and /report (a one-case HTML report).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from mkcnet.analysis.cam import DEFAULT_METHOD
from mkcnet.data.images import WINDOW_PRESETS, Volume, Window, model_window, parse_window, read_volume
from mkcnet.degradation import list_families, severity_table
from mkcnet.errors import UserError
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.examples import Example
from mkcnet.workbench.imaging import NO_DEGRADATION, load_for
from mkcnet.workbench.reading import Reading, analyse, robustness_for
from mkcnet.workbench.report import batch_files, batch_table, batch_view, case_report
from mkcnet.workbench.ui import (
    PageColumns,
    PredictionPanel,
    image_input,
    model_dropdown,
    opening,
    page_frame,
    panel_view,
    prediction_panel,
    reading_settings,
    refresh_examples,
    server_checked,
    wire,
)
from mkcnet.workbench.zoo import ZooModel

TITLE = "Diagnose"


DEFAULT_WINDOW, CUSTOM_WINDOW = "default", "custom"
WINDOW_CHOICES = [("the model's default, else the file's own", DEFAULT_WINDOW),
                  *[(w.describe(), w.name) for w in WINDOW_PRESETS], ("custom: the centre and width below", CUSTOM_WINDOW)]


def chosen_window(name: str | None, centre: float | None, width: float | None) -> Window | None:
    """The window a visitor chose for DICOM and NIfTI (None: the model's default, else the file's)."""
    if not name or name == DEFAULT_WINDOW:
        return None
    if name == CUSTOM_WINDOW:
        if centre is None or width is None or not float(width) > 0:
            raise UserError("a custom window needs a centre and a width above 0 (CT: Hounsfield units)")
        return Window(float(centre), float(width), "custom")
    return parse_window(str(name))


def switched_on(value) -> bool:
    """A checkbox's value: true or false, nothing else (a client may send anything)."""
    if not isinstance(value, bool):
        raise UserError("the robustness switch is either on or off")
    return value


def shows_reading(volume: Volume) -> bool:
    """Whether how the file was read is worth a line: slices to choose from, or a window applied."""
    return bool(volume.window_source) or volume.count > 1


def family_choices(modality: str) -> list[tuple[str, str]]:
    return [("none (the original image)", NO_DEGRADATION)] + [(f, f) for f in list_families(modality)]


def severity_text(modality: str, family: str | None, severity: int) -> str:
    """What the chosen family and severity mean, from the simulator's own table."""
    if not family or family == NO_DEGRADATION:
        return "Pick a degradation family to see how the predictions and the maps move."
    row = next((r for r in severity_table(modality) if r["family"] == family), None)
    if row is None:
        return ""
    level = int(severity or 0)
    detail = f" Severity {level}: {row[str(level)]}." if level > 0 else " Severity 0: the original image."
    return f"**{family}** — {row['summary']}.{detail}"


def shift(before: dict[str, float] | None, after: dict[str, float] | None, head: str) -> str:
    if not before or not after:
        return ""
    b, a = max(before, key=before.get), max(after, key=after.get)
    if a == b:
        return f"{head}: {a} {before[a]:.0%} → {after[a]:.0%}"
    return f"{head}: {b} {before[b]:.0%} → **{a} {after[a]:.0%}**"


def what_if_text(before: Reading, after: Reading, record: dict) -> str:
    moves = [m for m in (shift(before.diagnosis, after.diagnosis, "diagnosis"),
                         shift(before.quality, after.quality, "quality")) if m]
    return f"**What-if {record['family']} · severity {record['severity']}** vs. the original — " + "; ".join(moves)


def true_label_text(model: ZooModel, example: Example | None, reading: Reading) -> str:
    """The example's labels from its data set beside what the model says (empty for an upload)."""
    if example is None or example.diagnosis is None:
        return ""
    names = model.class_names("diagnosis")
    if not 0 <= example.diagnosis < len(names):
        return ""
    said = names[reading.top_diagnosis]
    verdict = "agrees" if said == names[example.diagnosis] else f"says **{said}**"
    label = f"**Labelled** {names[example.diagnosis]}"
    qnames = model.class_names("quality")
    if example.quality is not None and 0 <= example.quality < len(qnames):
        label += f", quality {qnames[example.quality]}"
    return f"{label} in its data set; the model {verdict}."


class DiagnoseEvents:
    """The page's handlers, over the workbench context; `build` wires them. Each returns its
    outputs without the status line (the wiring adds it)."""

    def __init__(self, context: Workbench, panel: PredictionPanel):
        self.context, self.panel = context, panel

    def prepared(self, zoo_model: ZooModel, file: str, family_name: str, level: int, seed_value: int,
                 window_name: str, centre: float, width: float, slice_k: int):
        return load_for(zoo_model, file, self.context.images, family_name, level, seed_value, slice=int(slice_k or 0),
                        window=chosen_window(window_name, centre, width))

    def inspect(self, file: str | None, model_name: str, window_name: str, centre: float, width: float):
        """The file's slices (a slider from 0 to count − 1, at the middle; hidden for one) and how it is read."""
        if not file:
            return gr.update(visible=False, value=0), ""
        zoo_model = self.context.zoo.model(model_name)
        window = chosen_window(window_name, centre, width) or model_window(zoo_model.config.input)
        volume = read_volume(file, window)
        # (a slider needs minimum < maximum: a one-slice file keeps 0–1, hidden)
        return (gr.update(minimum=0, maximum=max(volume.count - 1, 1), value=volume.middle, visible=volume.count > 1),
                f"*{volume.kind}: {volume.describe(volume.middle)}*" if shows_reading(volume) else "")

    def predict(self, file: str | None, model_name: str, family_name: str, level: int, seed_value: int,
                window_name: str, centre: float, width: float, slice_k: int, robust: bool, request: gr.Request):
        if not file:
            return None, None, None, "", False, ""
        context = self.context
        zoo_model, session = context.zoo.model(model_name), context.session(request, file)
        what = (family_name, level, seed_value, window_name, centre, width, slice_k)
        prepared = self.prepared(zoo_model, file, *what)
        margin = None
        if switched_on(robust):
            window = chosen_window(window_name, centre, width) or model_window(zoo_model.config.input)
            margin = robustness_for(zoo_model, context.images.read(file, slice=int(slice_k or 0), window=window))
        view = panel_view(zoo_model, prepared, "", 0, session, with_cams=False, margin=margin)
        change = true_label_text(zoo_model, context.example_of(file, session, zoo_model.entry.modality), view.reading)
        if prepared.record is not None:
            original = self.prepared(zoo_model, file, "", 0, 0, *what[3:])
            before = panel_view(zoo_model, original, "", 0, session, with_cams=False).reading
            change = what_if_text(before, view.reading, prepared.record) + (f"  \n{change}" if change else "")
        return session.image_file(prepared.display), *self.panel.values(view, with_cams=False), change

    def cams(self, file: str | None, model_name: str, family_name: str, level: int, seed_value: int,
             cam_method: str, weight: float, window_name: str, centre: float, width: float, slice_k: int,
             robust: bool, request: gr.Request):
        if not file:
            return []
        zoo_model, session = self.context.zoo.model(model_name), self.context.session(request, file)
        prepared = self.prepared(zoo_model, file, family_name, level, seed_value, window_name, centre, width, slice_k)
        return panel_view(zoo_model, prepared, cam_method, weight, session).cams

    def change_model(self, model_name: str, request: gr.Request):
        entry = self.context.zoo.entry(model_name)
        gallery, shown = refresh_examples(self.context, entry, request)
        return (gr.update(choices=family_choices(entry.modality), value=NO_DEGRADATION),
                severity_text(entry.modality, None, 0), entry.card_markdown(), self.reliability_of(model_name),
                gallery, shown, gr.update())

    def reliability_of(self, model_name: str):
        """The card's reliability diagram, from the model's bundled validation pack (none without one)."""
        from mkcnet.analysis.reliability import reliability_figure

        entry = self.context.zoo.entry(model_name)
        if entry.pack_dir is None:
            return None
        figure = reliability_figure({entry.title: self.context.zoo.pack(model_name)})
        figure.update_layout(height=380, title=None)
        return figure

    def change_data(self, model_name: str, request: gr.Request):
        return refresh_examples(self.context, self.context.zoo.entry(model_name), request)

    def read_batch(self, files: list[str] | None, model_name: str, request: gr.Request):
        context = self.context
        zoo_model, session = context.zoo.model(model_name), context.session(request, files or [])
        unpacked = session.folder / "batch"
        shutil.rmtree(unpacked, ignore_errors=True)
        found = batch_files(files or [], unpacked, context.hosting)
        table = batch_table(zoo_model, found, unpacked)
        target = session.folder / "batch-out" / "readings.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(target, index=False)
        return batch_view(table), str(target)

    def report(self, file: str | None, model_name: str, family_name: str, level: int, seed_value: int,
               cam_method: str, weight: float, window_name: str, centre: float, width: float, slice_k: int,
               robust: bool, request: gr.Request):
        if not file:
            raise UserError("upload an image or pick an example first")
        context = self.context
        zoo_model, session = context.zoo.model(model_name), context.session(request, file)
        prepared = self.prepared(zoo_model, file, family_name, level, seed_value, window_name, centre, width, slice_k)
        window = chosen_window(window_name, centre, width) or model_window(zoo_model.config.input)
        margin = robustness_for(zoo_model, context.images.read(file, slice=int(slice_k or 0), window=window)) \
            if switched_on(robust) else None
        reading, overlays = analyse(zoo_model, prepared, cam_method or DEFAULT_METHOD, float(weight or 0.5), margin,
                                    session.plain)
        volume = read_volume(file, window)
        note = volume.describe(int(slice_k or 0)) if shows_reading(volume) else ""
        name = Path(file).name
        target = session.folder / "reports" / f"{Path(name).stem}-report.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(case_report(zoo_model, name, prepared.display, reading, overlays, input_note=note,
                                      method=cam_method or DEFAULT_METHOD, opacity=float(weight or 0.5)))
        return str(target)

    def describe(self, model_name: str, family_name: str, level: int) -> str:
        return severity_text(self.context.zoo.entry(model_name).modality, family_name, level)


def build(context: Workbench, root: gr.Blocks | None = None) -> gr.Blocks:
    with page_frame(TITLE, TITLE, "Upload an image or pick an example. Each feature branch gets its own class "
                    "activation map; the what-if panel degrades the image with the project's simulator."
                    , context, root=root) as (page, status_md, linked):
        with gr.Row(equal_height=False, elem_classes=[PageColumns.ROW]):
            with gr.Column(scale=2, min_width=340, elem_classes=[PageColumns.CONTROLS]):
                with gr.Column(elem_classes=[PageColumns.CHOOSE]):
                    view = gr.Group()
                    model = model_dropdown(context)
                    entry = context.zoo.entry(model.value) if model.value else None
                    first = entry.modality if entry else "fundus"
                    start = opening(context, model.value, first)
                    source = image_input(context, status_md, first, value=start[0] if start else None,
                                         names=entry and entry.label_names)
                with gr.Column(elem_classes=[PageColumns.TUNE]):
                    with gr.Accordion("DICOM and NIfTI: window and slice", open=False):
                        window = gr.Dropdown(WINDOW_CHOICES, value=DEFAULT_WINDOW, label="Window",
                                             info="how CT values become grey levels; the line below says which "
                                                  "window and slice the model read")
                        with gr.Row():
                            centre = gr.Number(-600, label="Centre (custom)", precision=0)
                            width = gr.Number(1500, label="Width (custom)", precision=0, minimum=1)
                        slice_k = gr.Slider(0, 1, value=0, step=1, label="Slice", visible=False)
                        read_as = gr.Markdown("", elem_classes=["read-as"])
                    with gr.Accordion("What-if: degrade the image", open=True):
                        # The families follow the model's modality; prepare() checks the value.
                        family = server_checked(family_choices(first), value=NO_DEGRADATION, label="Degradation family")
                        severity = gr.Slider(0, 5, value=0, step=1, label="Severity (0 = none)")
                        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                        meaning = gr.Markdown(severity_text(first, None, 0), elem_classes=["meaning"])
                        robust = gr.Checkbox(False, label="Robustness margin: the lowest severity of each family that "
                                                          "changes the diagnosis (a few seconds)")
                    method, opacity, data_changed, viewed = reading_settings(context, status_md, linked, view)
            with gr.Column(scale=3, min_width=480, elem_classes=[PageColumns.RESULTS]):
                panel = prediction_panel(preview="What the model sees", note=True, opening=start)
                with gr.Row():
                    report_go = gr.Button("Case report (HTML)", size="sm", scale=0)
                    report_file = gr.File(label="Case report", interactive=False, scale=1, elem_classes=["report"])
                with gr.Accordion("Model card", open=False):
                    card = gr.Markdown(context.zoo.entry(model.value).card_markdown() if model.value else "",
                                       elem_classes=["card"])
                    card_reliability = gr.Plot(label="Reliability diagram (diagnosis, validation images)",
                                               elem_id="card-reliability")
        # Full width: the table has ten columns, and a flagged row must be seen as one.
        with gr.Accordion("Several images at once", open=False):
            with gr.Row():
                # (no height: a fixed one hides every file but the first)
                batch_in = gr.File(file_count="multiple", type="filepath", label="Images, or one zip of images",
                                   scale=3, elem_classes=["batch-in"])
                batch_go = gr.Button("Read them all", scale=1)
            batch_out = gr.Dataframe(label="One row per file: flagged ones first, struck out; errors included",
                                     interactive=False, wrap=True, elem_classes=["batch"])
            batch_csv = gr.File(label="The table as CSV", interactive=False)

        events = DiagnoseEvents(context, panel)
        # The reading controls come last: /predict, /cam and /report keep their earlier arguments' places.
        what = [source.file, model, family, severity, seed]
        reading_as = [window, centre, width, slice_k, robust]
        outputs = [panel.preview, *panel.outputs(with_cams=False), panel.note, status_md]
        # The public event first: it owns the name "predict" (a private one would take it otherwise).
        predicted = wire([family.change, severity.change, seed.change, model.input, window.change, centre.submit,
                          width.submit, slice_k.release, robust.change], events.predict, [*what, *reading_as], outputs,
                         api_name="predict", concurrency_limit=2)
        # A new file first sets its slices (the slider must not keep another file's slice), then reads.
        inspected = wire(source.file.change, events.inspect, [source.file, model, window, centre, width],
                         [slice_k, read_as, status_md], api_visibility="private")
        opened = wire(inspected.then, events.predict, [*what, *reading_as], outputs, api_visibility="private",
                      concurrency_limit=2)
        # The plain/expert switch: the same image read out again in the other view's words.
        reread = wire(viewed.then, events.predict, [*what, *reading_as], outputs, api_visibility="private",
                      concurrency_limit=2)
        panel.restyle_after(opened, predicted, reread)
        wire(reread.then, events.cams, [*what, method, opacity, *reading_as], [panel.cams, status_md],
             api_visibility="private")
        for done in (opened, predicted):
            wire(done.then, events.cams, [*what, method, opacity, *reading_as], [panel.cams, status_md],
                 **({"api_name": "cam"} if done is predicted else {"api_visibility": "private"}))
        # The page's load fills in the opening example's maps (its probabilities come built in).
        wire([page.load, method.change, opacity.release], events.cams, [*what, method, opacity, *reading_as],
             [panel.cams, status_md], api_visibility="private")
        wire(batch_go.click, events.read_batch, [batch_in, model], [batch_out, batch_csv, status_md], api_name="batch",
             concurrency_limit=1)
        wire(report_go.click, events.report, [*what, method, opacity, *reading_as], [report_file, status_md],
             api_name="report", concurrency_limit=1)
        wire([family.change, severity.change], events.describe, [model, family, severity], meaning,
             api_visibility="private")
        wire(model.input, events.change_model, model,
             [family, meaning, card, card_reliability, source.gallery, source.shown, panel.preview, status_md],
             api_visibility="private")
        wire(page.load, events.reliability_of, model, card_reliability, api_visibility="private")
        for changed in data_changed:
            wire(changed.then, events.change_data, model, [source.gallery, source.shown, status_md],
                 api_visibility="private")
    return page
