"""UI pieces every page shares: the error boundary, the data-folder field, the image input
(upload or example), and the prediction panel (probabilities, reading, branch CAMs).

Pages compose these; none of them builds its own copy.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from mkcnet.analysis.cam import CAM_METHODS, DEFAULT_METHOD
from mkcnet.errors import UserError
from mkcnet.workbench.context import Example, Workbench
from mkcnet.workbench.imaging import Prepared, load_for, thumbnail
from mkcnet.workbench.reading import Reading, analyse, read_out
from mkcnet.workbench.zoo import ZooModel

log = logging.getLogger("mkcnet.workbench")

NO_QUALITY_HEAD = "no quality head"
# The data folder is remembered in the browser across pages. The value is a folder path, not
# a secret: a fixed key lets every page (and a restarted server) read it back.
DATA_FOLDER_KEY = "mkcnet-data-folder"
DATA_FOLDER_SECRET = "mkcnet-workbench"


# ---- errors ---------------------------------------------------------------------------------

def status(message: str = "") -> str:
    return f"⚠️ {message}" if message else ""


def guarded(n_outputs: int) -> Callable:
    """The error boundary of an event handler whose LAST output is a status Markdown.

    A UserError (unreadable upload, missing folder, wrong family...) or any unexpected failure
    becomes a warning toast plus the status line; the other outputs keep their values
    (gr.skip), and the server carries on. Handlers return their status ("" when all is well).
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)  # keeps the signature: gradio injects gr.SelectData by type hint
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as err:
                message = str(err)
            except Exception as err:  # logged: the app must survive anything a user sends
                log.exception("workbench handler %s failed", fn.__name__)
                message = f"something went wrong ({type(err).__name__}: {err})"
            gr.Warning(message)
            skipped = [gr.skip() for _ in range(n_outputs - 1)]
            return (*skipped, status(message)) if n_outputs > 1 else status(message)

        return run

    return wrap


def status_box() -> gr.Markdown:
    return gr.Markdown("", elem_classes=["status"])


@contextmanager
def page_frame(title: str, heading: str, intro: str) -> Iterator[tuple[gr.Blocks, gr.Markdown]]:
    """A page's heading, introduction and status line (every page has them), and the Blocks its
    load events attach to. Inside the app the page renders into the current route and its
    events belong to the app's Blocks (tagged with the route); on its own it is a standalone
    Blocks. A nested Blocks per page would cost each page two more FastAPI apps at start-up."""
    from gradio.context import Context  # gradio <7 is pinned: the root of the Blocks being built

    root = Context.root_block
    if root is not None:
        with gr.Column():
            gr.Markdown(f"## {heading}\n{intro}")
            yield root, status_box()
        return
    with gr.Blocks(title=f"MKCNet workbench — {title}") as page:
        gr.Markdown(f"## {heading}\n{intro}")
        yield page, status_box()


# ---- the data folder --------------------------------------------------------------------------

def data_folder_field(context: Workbench, page: gr.Blocks) -> tuple[gr.Textbox, Any]:
    """A text field for the user's data set (project split format), remembered across pages;
    MKCNET_DATA gives its first value. Returns the field and the page-load event that restores
    it, for the page to chain its own refresh onto."""
    remembered = gr.BrowserState(context.default_data, storage_key=DATA_FOLDER_KEY, secret=DATA_FOLDER_SECRET)
    field = gr.Textbox(value=context.default_data, label="Data folder",
                       placeholder="a folder with val.csv (image_path,diagnosis,quality) and its images",
                       info="Set it (or MKCNET_DATA) to use your own images for examples, thumbnails "
                            "and live re-evaluation.")
    restored = page.load(lambda saved: saved or context.default_data, remembered, field, api_visibility="private")
    for event in (field.blur, field.submit):
        event(lambda text: text, field, remembered, api_visibility="private")
    return field, restored


# ---- the image input --------------------------------------------------------------------------

@dataclass
class ImageInput:
    """`file` holds the image every analysis reads (an upload or a staged example)."""

    file: gr.File
    gallery: gr.Gallery
    shown: gr.State  # the example paths the gallery shows, in order


_staged: dict[str, str] = {}


def stage(path: Path) -> str:
    """Copy an example into the temp folder, which gradio may serve whatever the data folder;
    once per example."""
    key = str(path)
    if key not in _staged or not Path(_staged[key]).is_file():
        folder = Path(tempfile.mkdtemp(prefix="mkcnet-example-"))
        _staged[key] = str(shutil.copy(path, folder / path.name))
    return _staged[key]


def example_gallery_value(context: Workbench, examples: list[Example]) -> list[tuple[Any, str]]:
    out = []
    for e in examples:
        try:
            out.append((thumbnail(context.images.read(e.path)), e.caption))
        except UserError as err:
            log.warning("example %s skipped: %s", e.path, err)
    return out


def image_input(context: Workbench, status_out: gr.Markdown, modality: str | None = None,
                label: str = "Image", value: str | None = None) -> ImageInput:
    """An upload field for any supported format (no file-type filter: a DICOM often has no
    extension, and the reader decides) and a gallery of examples; picking one puts it in the
    upload field, so every analysis reads one place."""
    file = gr.File(value=value, label=f"{label} — PNG, JPEG, TIFF, BMP or DICOM", type="filepath", height=90,
                   elem_classes=["upload"])
    examples = context.examples(modality)
    gallery = gr.Gallery(value=example_gallery_value(context, examples), label="…or pick an example",
                         columns=4, height=230, allow_preview=False, object_fit="cover",
                         elem_classes=["examples"])
    shown = gr.State([str(e.path) for e in examples])

    @guarded(2)
    def pick(shown_paths: list[str], evt: gr.SelectData):
        return stage(Path(shown_paths[evt.index])), status()

    gallery.select(pick, shown, [file, status_out], api_visibility="private")
    return ImageInput(file, gallery, shown)


def first_example(shown_paths: list[str]) -> str | None:
    """The first example, staged: pages open with something to look at."""
    return stage(Path(shown_paths[0])) if shown_paths else None


# (staged file, display image, [diagnosis, quality, reading, CAMs]) of a page's first look
Opening = tuple[str, Any, list]


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
        file = stage(examples[0].path)
        model = context.zoo.model(model_name)
        prepared = load_for(model, file, context.images)
        return file, prepared.display, panel_values(model, prepared, DEFAULT_METHOD, 0.5, with_cams=False)[1]
    except Exception:  # logged: the page still works without its first look
        log.exception("no opening analysis")
        return None


def refresh_examples(context: Workbench, modality: str | None, data_root: str | None) -> tuple[list, list[str]]:
    """Gallery value and paths for a modality and data folder."""
    examples = context.examples(modality, data_root)
    return example_gallery_value(context, examples), [str(e.path) for e in examples]


# ---- predictions ------------------------------------------------------------------------------

def model_dropdown(context: Workbench, names: list[str] | None = None, label: str = "Model") -> gr.Dropdown:
    choices = context.zoo.choices(names)
    return gr.Dropdown(choices, value=choices[0][1] if choices else None, label=label)


def cam_controls() -> tuple[gr.Dropdown, gr.Slider]:
    method = gr.Dropdown(list(CAM_METHODS), value=DEFAULT_METHOD, label="CAM method")
    opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="CAM opacity")
    return method, opacity


@dataclass
class PredictionPanel:
    diagnosis: gr.Label
    quality: gr.Label
    reading: gr.Markdown
    cams: gr.Gallery
    preview: gr.Image | None = None
    note: gr.Markdown | None = None

    @property
    def outputs(self) -> list:
        return [self.diagnosis, self.quality, self.reading, self.cams]


def prediction_panel(title: str | None = None, preview: str | None = None, note: bool = False,
                     opening: Opening | None = None) -> PredictionPanel:
    """Probabilities, the reading and the CAM grid; with `preview` (a label), the image the
    model sees sits left of the probabilities; with `note`, a line for the page under the
    reading; `opening` fills it in from the start."""
    display, (diagnosis_value, quality_value, text, overlays) = opening[1:] if opening else (None, [None] * 4)
    if title:
        gr.Markdown(f"### {title}")
    with gr.Row(equal_height=True):
        shown = gr.Image(display, label=preview, height=240, interactive=False, buttons=[], scale=1,
                         elem_classes=["preview"]) if preview else None
        diagnosis = gr.Label(diagnosis_value, label="Diagnosis", num_top_classes=5, scale=1)
        quality = gr.Label(quality_value, label="Image quality", num_top_classes=5, scale=1)
    reading = gr.Markdown(text, elem_classes=["reading"])
    remark = gr.Markdown(elem_classes=["note"]) if note else None
    # "max-content": the default and "auto" cap the grid at 550 px, which hides the second row.
    cams = gr.Gallery(overlays, label="Class activation maps per branch", columns=2, height="max-content",
                      allow_preview=True, object_fit="contain", elem_classes=["cams"])
    return PredictionPanel(diagnosis, quality, reading, cams, shown, remark)


def panel_values(model: ZooModel, prepared: Prepared, method: str, opacity: float,
                 with_cams: bool = True) -> tuple[Reading, list]:
    """(reading, [diagnosis, quality, reading text, CAM gallery]) for a PredictionPanel."""
    if with_cams:
        reading, overlays = analyse(model, prepared, method or DEFAULT_METHOD, float(opacity))
    else:
        reading, overlays = read_out(model, prepared), []
    # A model without a quality head says so in the quality box rather than leaving it blank.
    quality = reading.quality if reading.quality is not None else NO_QUALITY_HEAD
    return reading, [reading.diagnosis, quality, reading.text, overlays]
