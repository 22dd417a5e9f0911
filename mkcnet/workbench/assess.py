"""`/assess`: one image, one model, one JSON assessment, for scripts and agents.

The workbench's other endpoints return what a page shows (labels, Markdown, overlays). This one
returns `mkcnet.Assessment.to_dict()`: diagnosis and quality probabilities raw and calibrated,
the out-of-distribution verdict and score, and (where the checkpoint has them) the prediction
set and referral advice. `python app.py --mcp` also serves it as an MCP tool (Gradio's MCP
server, which takes the docstring below as the tool's description).

It only predicts, so it runs on the faster runtime where there is one: the first call for a model
answers on torch and, when onnxruntime is installed (the `onnx` extra), starts exporting that
model to ONNX in the background (about a second); later calls run on onnxruntime, about twice as
fast in process on 2 CPU cores (docs/workbench.md, "Runtimes"), with the same probabilities to
1e-4 and the same verdicts (tests/test_onnx.py). `runtime` in the answer says which ran.

Hosted-mode rules hold as for every event: the image arrives through Gradio's file input (an
upload, never a server path a client names), the model is a name from the server's own list,
and an error is a one-line message without server paths.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from mkcnet.api import Model
from mkcnet.data.images import model_window
from mkcnet.errors import UserError
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.ui import wire, without_paths

log = logging.getLogger("mkcnet.workbench")
API_NAME = "assess"


class Assessor:
    """The handler's state: the app's zoo and image cache, and one predictor per loaded model (the
    API's torch `Model`, replaced by its ONNX export on onnxruntime once that is ready)."""

    def __init__(self, context: Workbench, onnx: bool | None = None):
        self.context = context
        self.onnx = onnx if onnx is not None else all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
        self._models: dict[str, Any] = {}
        self._exports: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> tuple[Any, threading.Lock]:
        zoo_model = self.context.zoo.model(name)  # a UserError for a name not in the server's list
        with self._lock:
            if name not in self._models:
                self._models[name] = Model(zoo_model.loaded, name=name)
                if self.onnx:
                    with zoo_model.lock:  # a copy to trace, so no page's CAM hooks meet the export
                        loaded = copy.deepcopy(zoo_model.loaded)
                    self._exports[name] = threading.Thread(target=self._to_onnx, args=(name, loaded), daemon=True)
                    self._exports[name].start()
        return self._models[name], zoo_model.lock

    def _to_onnx(self, name: str, loaded) -> None:
        from mkcnet.export import export_onnx
        from mkcnet.inference.onnx_runtime import OnnxModel

        try:
            target = self.context.sessions.base / "onnx" / f"{name}.onnx"  # the app's folder: gone when it stops
            target.parent.mkdir(parents=True, exist_ok=True)
            exported = OnnxModel(export_onnx(loaded, target), threads=1)
        except Exception:  # logged: torch keeps answering
            log.exception("/assess: no ONNX export of %s, torch answers", name)
            return
        with self._lock:
            self._models[name] = exported

    def wait(self, name: str, timeout: float = 120.0) -> None:
        """Until a model's export (if any) has finished (tests, benchmarks)."""
        export = self._exports.get(name)
        if export is not None:
            export.join(timeout)

    def __call__(self, image: str | None, model: str) -> dict[str, Any]:
        try:
            if not image:
                raise UserError("send an image (PNG, JPEG, TIFF, BMP or DICOM)")
            found, lock = self.model(str(model))
            spec = self.context.zoo.model(str(model)).config.input
            decoded = self.context.images.read(image, window=model_window(spec))  # as `mkcnet predict`
            torch_model = isinstance(found, Model)
            if torch_model:
                with lock:  # a CAM in another request may hook the same network's layers
                    result = found.predict([decoded])[0]
            else:
                result = found.predict([decoded])[0]
            result = dataclasses.replace(result, source=Path(image).name)
            return {"model": str(model), "runtime": "torch" if torch_model else "onnxruntime", **result.to_dict()}
        except UserError as err:
            message = str(err)
        except Exception as err:  # logged: the app must survive anything a client sends
            log.exception("/assess failed")
            message = f"something went wrong ({type(err).__name__})"
        return {"model": str(model)[:80], "error": without_paths(message)[:400]}


def add_assess_endpoint(context: Workbench) -> None:
    """Add the `/assess` endpoint to the Blocks being built (no visible component: API and MCP only).

    Example:
        >>> with gr.Blocks() as demo:  # doctest: +SKIP
        ...     add_assess_endpoint(Workbench())
    """
    assessor = context.assessor = Assessor(context)
    names = context.zoo.names()

    def assess(image: str, model: str) -> dict:
        """Assess one medical image with an MKCNet model: image-quality-aware diagnosis with calibrated confidence.

        Returns JSON: the diagnosis and its probabilities (calibrated by temperature scaling, and raw), the
        image-quality class and its probabilities, an out-of-distribution verdict (`ood`: true means the image does
        not resemble the model's training data, so its diagnosis must not be used; `ood_score` above 1 is flagged;
        `ood_reason` says why), and, where the model has them, a conformal prediction set and referral advice;
        `error` is non-empty when the image could not be assessed. Research software, not a medical device.

        Args:
            image: the image file (PNG, JPEG, TIFF, BMP or DICOM).
            model: the model's name, one of the workbench's models (e.g. "ct-iqad-mkcnet" for chest CT,
                "synth-fundus-mkcnet" for colour fundus photographs).
        """
        return assessor(image, model)

    file = gr.File(type="filepath", visible=False, label="image")
    choice = gr.Dropdown(choices=names, value=names[0] if names else None, visible=False, label="model")
    out = gr.JSON(visible=False, label="assessment")
    trigger = gr.Button(visible=False)
    # Its own boundary answers errors in the JSON; `wire` adds the app's (and its checks) around it.
    wire(trigger.click, assess, [file, choice], out, api_name=API_NAME)


__all__ = ["API_NAME", "Assessor", "add_assess_endpoint"]
