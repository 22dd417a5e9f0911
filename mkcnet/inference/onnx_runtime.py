"""Predicting with an exported model (`mkcnet export`) on onnxruntime: no torch, timm or scikit-learn.

The `.onnx` file carries the checkpoint's trust data in its metadata (`mkcnet.export`), so this
gives the same `Assessment`s as the torch path (`mkcnet.api.Model.predict`; tested to 1e-4), in a
process a fraction of the size: `mkcnet predict CHECKPOINT --runtime onnxruntime`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mkcnet.config import InputSpec
from mkcnet.data.images import Window, fit_to_model, model_window, read_image
from mkcnet.errors import UserError
from mkcnet.inference.assessment import Assessment, TrustData, assess_outputs, class_names
from mkcnet.trust.conformal import PredictionSets
from mkcnet.trust.guard import Guard, input_statistics

ONNX_NAME = "model.onnx"


def find_onnx(checkpoint: str | Path) -> Path:
    """The .onnx file for a checkpoint argument: the file itself, a folder's model.onnx (or its one
    .onnx file), or the .onnx beside a .safetensors checkpoint."""
    path = Path(checkpoint)
    candidates = [path] if path.suffix == ".onnx" else [path / ONNX_NAME, *sorted(path.glob("*.onnx"))] \
        if path.is_dir() else [path.with_suffix(".onnx")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"no ONNX model for {path}: run `mkcnet export {path} --format onnx` first")
    return found


def _array(raw: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(raw["float32_base64"]), np.float32).reshape(raw["shape"])


class OnnxModel:
    """An exported MKCNet model on onnxruntime's CPU provider.

    Example:
        >>> from mkcnet.inference.onnx_runtime import OnnxModel
        >>> model = OnnxModel("checkpoints/ct-iqad-mkcnet/model.onnx")  # doctest: +SKIP
        >>> model.predict(["scan.png"])[0].diagnosis  # doctest: +SKIP
        'COVID-19'
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = find_onnx(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001  (onnxruntime raises its own classes for a bad file)
            raise UserError(f"{self.path.name} is not a loadable ONNX model: {type(err).__name__}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "mkcnet" not in meta or "mkcnet.input" not in meta:
            raise UserError(f"{self.path.name} carries no MKCNet metadata (export it with `mkcnet export`)")
        self.header: dict[str, Any] = json.loads(meta["mkcnet"])
        self.input: dict[str, Any] = json.loads(meta["mkcnet.input"])
        self.spec = InputSpec(self.input["channels"], self.input["size"], self.input["mean"], self.input["std"],
                              self.input.get("window"))
        model = self.header["config"]["model"]
        guard = None
        if "guard" in self.header and "mkcnet.guard" in meta:
            tensors = {k: _array(v) for k, v in json.loads(meta["mkcnet.guard"]).items()}
            guard = Guard.from_header(self.header["guard"], tensors)
        temperatures = {k: float(v) for k, v in self.header.get("calibration", {}).get("temperatures", {}).items()}
        quality = class_names(model["quality_names"], model["num_quality"]) if model.get("use_quality") else None
        self.trust = TrustData(class_names(model["diagnosis_names"], model["num_diagnosis"]), quality, temperatures,
                               guard, PredictionSets.from_dict(sets) if (sets := self.header.get("prediction_sets")) else None)
        # `mkcnet.data.dataset.normalise` in numpy (that one needs torch): (x/255 - mean)/std per channel.
        self._mean = np.asarray(self.spec.mean, np.float32).reshape(1, -1, 1, 1)
        self._std = np.asarray(self.spec.std, np.float32).reshape(1, -1, 1, 1)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (every head's logits and "feature") for uint8 N×C×S×S images."""
        x = (batch.astype(np.float32) / np.float32(255) - self._mean) / self._std
        names = self.input["outputs"]
        return dict(zip(names, self.session.run(names, {self.input["name"]: x})))

    def predict(self, images: Sequence[str | Path | bytes | np.ndarray] | str | Path, batch_size: int = 32,
                slice: int | None = None, window: Window | None = None) -> list[Assessment]:
        """Assess images (paths, bytes or decoded arrays), as `mkcnet.api.Model.predict` does;
        `slice` and `window` as in `mkcnet predict` (default: the middle slice, the model's window)."""
        window = window or model_window(self.spec)
        if isinstance(images, (str, Path, bytes, np.ndarray)):
            images = [images]
        out: list[Assessment] = []
        pending: list[tuple[int, str, np.ndarray, tuple[float, float]]] = []
        for k, item in enumerate(images):
            source = str(item) if isinstance(item, (str, Path)) else f"<image {k}>"
            try:
                image = read_image(item, slice=slice, window=window)
            except UserError as err:
                out.append(Assessment(source=source, error=str(err)))
                continue
            out.append(Assessment(source=source))
            pending.append((k, source, fit_to_model(image, self.spec), input_statistics(image)))
        for start in range(0, len(pending), batch_size):
            part = pending[start:start + batch_size]
            raw = self.run(np.stack([p[2] for p in part]))
            logits = {h: raw[h] for h in ("diagnosis", "quality") if h in raw}
            feature = raw["feature"] if self.trust.guard is not None else None
            for (k, *_), a in zip(part, assess_outputs([p[1] for p in part], logits, feature, [p[3] for p in part],
                                                       self.trust)):
                out[k] = a
        return out


__all__ = ["OnnxModel", "find_onnx"]
