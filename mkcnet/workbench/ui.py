"""UI pieces every page shares: the error boundary, the data-folder field, the image input
(upload or example), and the prediction panel (probabilities, reading, branch CAMs).

Pages compose these; none of them builds its own copy.
"""

from __future__ import annotations

import functools
import logging
import re
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from mkcnet.analysis.cam import CAM_METHODS, DEFAULT_METHOD
from mkcnet.errors import UserError
from mkcnet.inference.robustness import Margin
from mkcnet.progress import Report
from mkcnet.workbench.context import Example, Workbench
from mkcnet.workbench.examples import LabelNames
from mkcnet.workbench.imaging import Prepared, load_for, thumbnail
from mkcnet.workbench.reading import COLOUR_BAR, Reading, analyse, explain_maps, read_out
from mkcnet.workbench.zoo import ZooEntry, ZooModel

log = logging.getLogger("mkcnet.workbench")

NO_QUALITY_HEAD = "no quality head"
# On every page, in plain sight (not in an accordion).
LIMITS = ("**Research software, not a medical device**: never base a clinical decision on it. Each model has seen "
          "only its own training data (its model card says which); on other images its readings mean little.")
# The data folder is remembered in the browser across pages. The value is a folder path, not
# a secret: a fixed key lets every page (and a restarted server) read it back.
DATA_FOLDER_KEY = "mkcnet-data-folder"
VISITOR_KEY = "mkcnet-visitor"  # the browser's storage key of the visitor key the server issued
DATA_FOLDER_SECRET = "mkcnet-workbench"


# ---- errors ---------------------------------------------------------------------------------

# An absolute path (POSIX or Windows) not glued to a word: "/etc/passwd", "C:\\data\\x.png".
SERVER_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"`,;:()<>]+)+[\\/]?")


def without_paths(message: str) -> str:
    """A message as a visitor may read it: every server path cut to the file's own name."""
    return SERVER_PATH.sub(lambda m: re.split(r"[\\/]", m.group(0).rstrip("/\\"))[-1] or "…", message)


def status(message: str = "") -> str:
    return f"⚠️ {without_paths(message)[:400]}" if message else ""


class WiringError(RuntimeError):
    """A handler that does not fit the outputs it is wired to: a bug in a page, never a visitor's doing."""


STATUS_CLASS = "status"


def status_box() -> gr.Markdown:
    return gr.Markdown("", label="Status", elem_classes=[STATUS_CLASS])


def _listed(blocks) -> list:
    return [] if blocks is None else list(blocks) if isinstance(blocks, list | tuple | set) else [blocks]


def _is_status(block) -> bool:
    return isinstance(block, gr.Markdown) and STATUS_CLASS in (block.elem_classes or [])


def _handler_name(handler: Callable) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"


def boundary(handler: Callable, outputs) -> Callable:
    """`handler` inside the workbench's error boundary, fitted to `outputs` (what it is wired to).

    When the last output is a status box, the handler returns the other outputs and the status
    line is filled in here: "" when all is well; for a UserError (unreadable upload, missing
    folder, wrong family...) or any unexpected failure, the error's line, also as a warning
    toast, while the other outputs keep their values (gr.skip) and the server carries on. The
    number of outputs is read from `outputs` alone: a handler that returns another number
    raises a WiringError naming it.

    Example:
        >>> with gr.Blocks():
        ...     box, status_line = gr.Textbox(), status_box()
        >>> boundary(lambda: "hello", [box, status_line])()
        ('hello', '')
    """
    outputs = _listed(outputs)
    has_status = bool(outputs) and _is_status(outputs[-1])
    expected = len(outputs) - has_status
    name = _handler_name(handler)
    try:  # gradio injects gr.Request / gr.SelectData by these hints; if one cannot resolve, it injects none
        typing.get_type_hints(handler)
    except NameError as err:
        raise WiringError(f"{name}: a type hint does not resolve ({err}), so gradio would inject no request") from None

    def fitted(result):
        values = result if expected > 1 else (result,) if expected == 1 else ()
        if expected > 1 and not (isinstance(result, tuple) and len(result) == expected):
            count = len(result) if isinstance(result, tuple) else 1
            raise WiringError(f"{name} returned {count} values for its {expected} outputs")
        if expected == 0 and result is not None:
            raise WiringError(f"{name} returned a value but is wired to no output")
        return (*values, "") if has_status else result

    @functools.wraps(handler)  # keeps the signature: gradio injects gr.SelectData and gr.Request by type hint
    def run(*args, **kwargs):
        try:
            result = handler(*args, **kwargs)
        except UserError as err:
            message = str(err)
        except Exception as err:  # logged: the app must survive anything a user sends
            log.exception("workbench handler %s failed", name)
            message = f"something went wrong ({type(err).__name__}: {err})"
        else:
            return fitted(result)
        message = without_paths(message)[:400]  # a visitor's oversized value is not echoed whole
        gr.Warning(message)
        skipped = [gr.skip() for _ in range(expected)]
        if has_status:
            return (*skipped, status(message)) if skipped else status(message)
        return tuple(skipped) if expected > 1 else skipped[0] if skipped else None

    run.wired = True  # tests/test_layout.py: every event of every page runs through here
    return run


# A handler that reports progress declares `progress=PROGRESS` as its last parameter: gradio sees a
# gr.Progress default (through `boundary`, whose wrapper keeps the handler's signature) and moves
# that event's progress bar with it; called outside an event it does nothing.
PROGRESS = gr.Progress()


def progress_report(progress: gr.Progress) -> Report:
    """A `mkcnet.progress.Report` that moves a handler's progress bar (`PROGRESS`), for the work
    the handler calls."""
    return lambda share, what: progress(share, desc=what)


def wire(event, handler: Callable, inputs=None, outputs=None, **options):
    """Wire `handler` to `event` inside the error boundary (see `boundary`); returns the
    event's dependency, for `.then`. `event` is a trigger (`button.click`, `dependency.then`,
    `page.load`) or a list of triggers (then `gr.on`); `options` are the trigger's own
    (api_name, api_visibility, concurrency_limit, trigger_mode...).

    Example:
        >>> with gr.Blocks() as demo:
        ...     name, greeting, status_line = gr.Textbox(), gr.Markdown(), status_box()
        ...     _ = wire(name.submit, lambda text: f"Hello {text}", name, [greeting, status_line])
        >>> len(demo.fns)
        1
    """
    run = boundary(handler, outputs)
    if isinstance(event, list):
        return gr.on(event, run, inputs, outputs, **options)
    return event(run, inputs, outputs, **options)


class PageFrame(NamedTuple):
    """What every page is built in: the Blocks its load events attach to, its status line, and
    the event after which the page knows its visitor (`link_visitor`): a page chains onto it
    what shows the visitor's data set and results."""

    page: gr.Blocks
    status: gr.Markdown
    linked: Any


@contextmanager
def page_frame(title: str, heading: str, intro: str, context: Workbench,
               root: gr.Blocks | None = None) -> Iterator[PageFrame]:
    """A page's heading, introduction and status line (every page has them), and the Blocks its
    load events attach to. Inside the app (`root`: the app's Blocks, handed down by app.py) the
    page renders into the current route and its events belong to the app's Blocks (tagged with
    the route); on its own it is a standalone Blocks. A nested Blocks per page would cost each
    page two more FastAPI apps at start-up."""
    if root is not None:
        with gr.Column():
            gr.Markdown(f"## {heading}\n{intro}")
            gr.Markdown(LIMITS, elem_classes=["limits"])
            yield PageFrame(root, status_box(), link_visitor(context, root))
        return
    with gr.Blocks(title=f"MKCNet workbench — {title}") as page:
        gr.Markdown(f"## {heading}\n{intro}")
        gr.Markdown(LIMITS, elem_classes=["limits"])
        yield PageFrame(page, status_box(), link_visitor(context, page))


def link_visitor(context: Workbench, page: gr.Blocks):
    """As the page opens, join it to its browser's visitor (`Sessions.link`): the key the server
    issued is kept in the browser's storage, so the data set and results a visitor brings on one
    page are theirs on every page. Returns the link event, for `.then`."""
    kept = gr.BrowserState("", storage_key=VISITOR_KEY, secret=context.sessions.browser_secret)

    def link(visitor: str | None, request: gr.Request) -> str:
        return context.sessions.link(visitor, request)

    return wire(page.load, link, kept, kept, api_visibility="private")


def end_sessions_on_unload(context: Workbench, demo: gr.Blocks) -> None:
    """When a visitor's page closes, their uploads, extracted files and results go."""

    def end_session(request: gr.Request) -> None:
        context.sessions.close(request)

    demo.unload(boundary(end_session, None))  # unload takes no inputs or outputs, so not `wire`


VIEWS = [("Plain", "plain"), ("Expert", "expert")]


def view_switch(context: Workbench, linked, status_out: gr.Markdown, expert_only: list) -> Any:
    """The plain/expert switch of a page that reads images out: plain (the default when hosted)
    says what a clinician reads and shows no ω branch, CAM theory, thresholds or commands; expert
    says all of it. The view is the visitor's (their session's), so every page keeps it.
    `expert_only` are controls shown in the expert view alone. Returns the event after which the
    view has changed, for the page to read its image out again."""
    switch = gr.Radio(VIEWS, value="plain" if context.sessions.plain else "expert", label="View",
                      info="plain: the reading for a clinician; expert: also the model's internals",
                      elem_classes=["view-switch"])

    def current(request: gr.Request) -> str:
        return "plain" if context.session(request).plain else "expert"

    def choose(view: str, request: gr.Request):
        if view not in ("plain", "expert"):
            raise UserError("the view is plain or expert")
        context.session(request).plain = view == "plain"
        shown = tuple(gr.update(visible=view == "expert") for _ in expert_only)
        return shown[0] if len(shown) == 1 else shown

    # A page opens with the app's default; the visitor's own view (set on another page) follows.
    wire(linked.then, current, None, switch, api_visibility="private")
    return wire(switch.change, choose, switch, [*expert_only, status_out], api_visibility="private")


# ---- the two columns of a reading page ----------------------------------------------------------

class PageColumns:
    """The element classes of a page's two columns (Diagnose, Compare, Embeddings): the controls
    left (CONTROLS), the results right (RESULTS), in a row (ROW). The controls are what picks what
    is shown (CHOOSE: the model, the upload, the examples; the run and branch) over what tunes or
    adds to it (TUNE: what-if, CAM settings, the visitor's data set...). At a narrow window the
    columns stack, and workbench.css then puts the results between the two, so the diagnosis or
    the plot comes right after what picked it rather than after every control."""

    ROW, CONTROLS, CHOOSE, TUNE, RESULTS = "page-columns", "page-controls", "page-choose", "page-tune", "page-results"


def reading_settings(context: Workbench, status_out: gr.Markdown, linked, view: gr.Group) -> tuple:
    """What every page that reads images out ends its controls with: the maps' method and opacity,
    the visitor's data set, and, in `view` (a group the page placed at the top), the plain/expert
    switch. Returns (method, opacity, the data set's change events, the view's change event)."""
    method, opacity = cam_controls(context)
    with gr.Accordion("Your data set", open=False):
        data_changed = data_source(context, status_out, linked)
    with view:
        viewed = view_switch(context, linked, status_out, [method])
    return method, opacity, data_changed, viewed


# ---- the visitor's data set ---------------------------------------------------------------------

def use_data_folder(context: Workbench, text: str | None, request: gr.Request | None) -> str:
    """Make a typed folder (local mode, inside the allowed roots) this visitor's data set."""
    session = context.session(request)
    session.use_folder(context.hosting.typed_folder(text))
    return data_set_line(context, session)


def data_set_line(context: Workbench, session) -> str:
    root = context.data_root(session)
    if root is None:
        return "Examples: the bundled ones. Bring your own data set to see its images."
    whose = f"your data set **{session.data_label}**" if session.data_root is not None else f"the data set **{root.name}**"
    return f"Examples and live evaluation: {whose}."


def data_source(context: Workbench, status_out: gr.Markdown, linked) -> list:
    """Where the visitor's data set comes from: an upload (a zip, or a split file plus its
    images; both modes), and in local mode also a typed folder inside the allowed roots,
    remembered in the browser across pages. Returns the events after which the data set may
    have changed (the page's link to its visitor among them: one brought on another page), for
    the page to chain its own refresh onto."""
    line = gr.Markdown(data_set_line(context, context.session(None)), elem_classes=["data-set"])
    upload = gr.File(label="Upload a data set: a zip, or val.csv (image_path,diagnosis,quality) and its images",
                     file_count="multiple", type="filepath", height=90, elem_classes=["data-upload"])

    def uploaded(files: list[str] | None, request: gr.Request):
        if not files:
            return gr.skip()
        session = context.session(request, files)
        session.use_upload([Path(f) for f in files], context.hosting)
        return data_set_line(context, session)

    def shown(request: gr.Request) -> str:
        return data_set_line(context, context.session(request))

    changed = [wire(upload.upload, uploaded, upload, [line, status_out], api_visibility="private",
                    concurrency_limit=1), wire(linked.then, shown, None, line, api_visibility="private")]
    if not context.hosting.hosted:
        remembered = gr.BrowserState(context.default_data, storage_key=DATA_FOLDER_KEY, secret=DATA_FOLDER_SECRET)
        field = gr.Textbox(value=context.default_data, label="…or a data folder on this machine",
                           placeholder="a folder with val.csv (image_path,diagnosis,quality) and its images",
                           info="Local mode only, inside the allowed folders (MKCNET_DATA_ROOTS; default: the "
                                "current directory).")

        def typed(text: str, request: gr.Request):
            return use_data_folder(context, text, request)

        def restore(saved: str | None) -> str:
            return saved or context.default_data

        def remember(text: str) -> str:
            return text

        restored = wire(linked.then, restore, remembered, field, api_visibility="private")
        changed.append(wire(restored.then, typed, field, [line, status_out], api_visibility="private"))
        changed.append(wire(field.submit, typed, field, [line, status_out], api_visibility="private"))
        # Enter then a page change never blurs the field
        wire([field.blur, field.submit], remember, field, remembered, api_visibility="private")
    return changed


def add_typed_run(context: Workbench, directory: str, request: gr.Request | None):
    """A run directory a visitor typed (local mode, inside the allowed roots) joins their
    session's packs; returns (session, key)."""
    session = context.session(request)
    session.check_budget()
    folder = context.hosting.typed_path(directory, "run directory")
    if folder is None:
        raise UserError("type a run directory (or a results-pack folder) first")
    return session, session.packs.add_run(folder)


# ---- the image input --------------------------------------------------------------------------

@dataclass
class ImageInput:
    """`file` holds the image every analysis reads (an upload or a staged example)."""

    file: gr.File
    gallery: gr.Gallery
    shown: gr.State  # the examples the gallery shows, in order: server-side, validated paths only


def example_gallery(context: Workbench, examples: list[Example], session=None) -> tuple[list[tuple[Any, str]], list[str]]:
    """(gallery value, paths) of the examples that read as images; the others are left out."""
    session = session or context.session(None)
    shown, paths = [], []
    for e in examples:
        try:
            shown.append((session.image_file(thumbnail(context.images.read(e.path))), e.caption))
            paths.append(str(e.path))
        except UserError as err:
            log.warning("example %s skipped: %s", e.path.name, err)
    return shown, paths


def picked(shown_paths: list[str], index: Any) -> Path:
    """The example at a client's index: looked up in the server's list, never taken as a path."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(shown_paths or []):
        raise UserError("no such example")
    return Path(shown_paths[index])


def image_input(context: Workbench, status_out: gr.Markdown, modality: str | None = None,
                label: str = "Image", value: str | None = None, names: LabelNames | None = None) -> ImageInput:
    """An upload field for any supported format (no file-type filter: a DICOM often has no
    extension, and the reader decides) and a gallery of examples (a data set's captioned in the
    page's model's class `names`); picking one puts it in the upload field, so every analysis
    reads one place."""
    file = gr.File(value=value, label=f"{label} — PNG, JPEG, TIFF, BMP or DICOM", type="filepath", height=90,
                   elem_classes=["upload"])
    thumbnails, paths = example_gallery(context, context.examples(modality, names=names))
    gallery = gr.Gallery(value=thumbnails, label="…or pick an example", columns=4, height=230, allow_preview=False,
                         object_fit="cover", elem_classes=["examples"])
    shown = gr.State(paths)

    def pick(shown_paths: list[str], evt: gr.SelectData, request: gr.Request):
        session = context.session(request)
        session.picked = picked(shown_paths, evt.index)
        return context.stage(session.picked, session)

    wire(gallery.select, pick, shown, [file, status_out], api_visibility="private")
    return ImageInput(file, gallery, shown)


def first_example(context: Workbench, shown_paths: list[str], request: gr.Request | None = None) -> str | None:
    """The first example, staged: pages open with something to look at."""
    return context.stage(Path(shown_paths[0]), context.session(request)) if shown_paths else None


# (staged file, display image, what the panel shows) of a page's first look
Opening = tuple[str, Any, "PanelView"]


def opening(context: Workbench, model_name: str | None, modality: str | None) -> Opening | None:
    """The first example through a model, computed while the page is built, so the home page
    opens with its predictions in place and the model is warm for the first visitor. The maps
    are left to the page's load event: they need pytorch-grad-cam (scikit-learn, matplotlib,
    OpenCV: ~0.9 s to import on 2 cores), which is then imported while the browser renders,
    not before the server answers. None, and a log line, when it cannot be had."""
    try:
        examples = context.examples(modality)
        if not model_name or not examples:
            return None
        file = context.stage(examples[0].path)
        model = context.zoo.model(model_name)
        prepared = load_for(model, file, context.images)
        session = context.session(None)
        view = panel_view(model, prepared, DEFAULT_METHOD, 0.5, session, with_cams=False)
        return file, session.image_file(prepared.display), view
    except Exception:  # logged: the page still works without its first look
        log.exception("no opening analysis")
        return None


def refresh_examples(context: Workbench, entry: ZooEntry, request: gr.Request | None) -> tuple[list, list[str]]:
    """Gallery value and paths for a model and the visitor's data set: the bundled examples of
    its modality, or the data set's images captioned in the model's class names."""
    session = context.session(request)
    examples = context.examples(entry.modality, context.data_root(session), names=entry.label_names)
    return example_gallery(context, examples, session)


# ---- predictions ------------------------------------------------------------------------------

def server_checked(*args, **kwargs) -> gr.Dropdown:
    """A dropdown whose choices change with another control (the model, the visitor's own packs):
    any string is accepted, so the API declares a string, not the choices it happened to open
    with; the handler looks the value up in the server's list for this model or session.
    (An instance attribute, not a subclass: Gradio draws subclasses as unknown components.)"""
    dropdown = gr.Dropdown(*args, allow_custom_value=True, **kwargs)
    declared = dropdown.api_info

    def api_info() -> dict[str, Any]:
        info = declared()
        (info["items"] if dropdown.multiselect else info).pop("enum", None)
        return info

    dropdown.api_info = api_info
    return dropdown


def model_dropdown(context: Workbench, names: list[str] | None = None, label: str = "Model") -> gr.Dropdown:
    choices = context.zoo.choices(names)
    return gr.Dropdown(choices, value=choices[0][1] if choices else None, label=label)


def cam_controls(context: Workbench) -> tuple[gr.Dropdown, gr.Slider]:
    """The map settings; the method is the expert view's only (`view_switch` shows and hides it)."""
    method = gr.Dropdown(list(CAM_METHODS), value=DEFAULT_METHOD, label="CAM method",
                         visible=not context.sessions.plain)
    opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="CAM opacity")
    return method, opacity


@dataclass
class PanelView:
    """What a prediction panel shows for one image through one model."""

    reading: Reading
    diagnosis: dict[str, float]
    quality: dict[str, float] | str
    text: str
    cams: list  # (file, caption) of the visitor's session; [] when the maps were not asked for

    @property
    def out_of_distribution(self) -> bool:
        return self.reading.verdict is not None and bool(self.reading.verdict.ood)


OUT_OF_DISTRIBUTION_CLASS = "out-of-distribution"
DIAGNOSIS_CLASSES = ["diagnosis"]


def diagnosis_classes(flagged: bool) -> list[str]:
    """The diagnosis box's classes: a flagged reading strikes its top class out (workbench.css)."""
    return [*DIAGNOSIS_CLASSES, OUT_OF_DISTRIBUTION_CLASS] if flagged else list(DIAGNOSIS_CLASSES)


@dataclass
class PredictionPanel:
    diagnosis: gr.Label
    quality: gr.Label
    reading: gr.Markdown
    cams: gr.Gallery
    # The guard's verdict as data: a State is no API output, so /predict keeps its values, and the
    # event after each reading restyles the diagnosis box by it (an element class, never found by
    # the reading's words).
    flagged: gr.State
    preview: gr.Image | None = None
    note: gr.Markdown | None = None

    def outputs(self, with_cams: bool = True) -> list:
        return [self.diagnosis, self.quality, self.reading, self.flagged, *([self.cams] if with_cams else [])]

    @staticmethod
    def values(view: PanelView, with_cams: bool = True) -> tuple:
        """`view` in the order of `outputs(with_cams)`."""
        return (view.diagnosis, view.quality, view.text, view.out_of_distribution, *([view.cams] if with_cams else []))

    def restyle_after(self, *readings) -> None:
        """After each of `readings` (events whose outputs include `outputs()`), strike out the
        diagnosis box or not by the verdict just set. Chained, not on the State's change: a
        change event that comes while the last restyle is pending can be dropped, which left a
        flagged box unstruck."""
        for reading in readings:
            wire(reading.then, _restyle_diagnosis, self.flagged, self.diagnosis, api_visibility="private")


def _restyle_diagnosis(flagged: bool):
    return gr.update(elem_classes=diagnosis_classes(bool(flagged)))


def prediction_panel(title: str | None = None, preview: str | None = None, note: bool = False,
                     opening: Opening | None = None) -> PredictionPanel:
    """Probabilities, the reading and the CAM grid; with `preview` (a label), the image the
    model sees sits left of the probabilities; with `note`, a line for the page under the
    reading; `opening` fills it in from the start."""
    display, view = opening[1:] if opening else (None, None)
    if title:
        gr.Markdown(f"### {title}")
    with gr.Row(equal_height=True):
        shown = gr.Image(display, label=preview, height=240, interactive=False, buttons=[], scale=1,
                         elem_classes=["preview"]) if preview else None
        diagnosis = gr.Label(view and view.diagnosis, label="Diagnosis", num_top_classes=5, scale=1,
                             elem_classes=diagnosis_classes(bool(view and view.out_of_distribution)))
        quality = gr.Label(view and view.quality, label="Image quality", num_top_classes=5, scale=1)
    # Labels name the outputs in the API ("Reading", not value_38); Markdown does not show them.
    reading = gr.Markdown(view and view.text, label="Reading", elem_classes=["reading"])
    remark = gr.Markdown(label="Note", elem_classes=["note"]) if note else None
    # "max-content": the default and "auto" cap the grid at 550 px, which hides the second row.
    cams = gr.Gallery(view and view.cams, label="Class activation maps per branch", columns=2,
                      height="max-content", allow_preview=True, object_fit="contain", elem_classes=["cams"])
    gr.HTML(COLOUR_BAR)
    flagged = gr.State(bool(view and view.out_of_distribution))
    return PredictionPanel(diagnosis, quality, reading, cams, flagged, shown, remark)


def panel_view(model: ZooModel, prepared: Prepared, method: str, opacity: float, session,
               with_cams: bool = True, margin: Margin | None = None) -> PanelView:
    """What a PredictionPanel shows (with `margin`, the reading says it); the maps as files of the
    visitor's session."""
    if with_cams:
        reading, overlays = analyse(model, prepared, method or DEFAULT_METHOD, float(opacity), margin, session.plain)
        flagged = reading.verdict is not None and reading.verdict.ood
        # A flagged image's maps would explain an output that means nothing: none are shown (the reading says so).
        overlays = [] if flagged else [(session.image_file(image), caption) for image, caption in overlays]
    else:
        reading, overlays = read_out(model, prepared, margin, session.plain), []
    # A model without a quality head says so in the quality box rather than leaving it blank.
    quality = reading.quality if reading.quality is not None else NO_QUALITY_HEAD
    # The reading's first line says whether these probabilities are calibrated.
    maps = explain_maps(model, session.plain)
    return PanelView(reading, reading.diagnosis, quality, reading.text + "\n\n" + maps, overlays)
