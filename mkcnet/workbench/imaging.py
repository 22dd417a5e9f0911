"""The one image-input path of the workbench: read any upload, optionally degrade it, and make
the model's input tensor and a display copy.

Without a degradation the model sees exactly what `mkcnet predict` feeds it (the original
image resized once by `load_resized`), so the app and the CLI agree. With one, the image is
first brought to a 256 px working copy (the simulator's reference size, which keeps every
family fast on large scans), degraded there, then resized for the model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

import numpy as np
import torch
from PIL import Image

from mkcnet.config import InputSpec
from mkcnet.data.dataset import normalise
from mkcnet.data.images import Window, load_resized, model_window, read_image, to_channels
from mkcnet.degradation import degrade, list_families
from mkcnet.errors import UserError
from mkcnet.trust.guard import input_statistics
from mkcnet.workbench.zoo import ZooModel

WORKING_SIZE = 256  # the degradation simulator's reference side
DISPLAY_SIZE = 256
NO_DEGRADATION = "none"


@dataclass(frozen=True)
class Prepared:
    """One image ready for a model: `tensor` 1×C×S×S normalised, `display` RGB uint8 for overlays."""

    tensor: torch.Tensor
    display: np.ndarray
    record: dict | None  # the degradation record, None for the original image
    stats: tuple[float, float] = (0.0, 1.0)  # (colourfulness, aspect) of the decoded image: the guard's input checks


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize H×W×C uint8 to size×size (the models see square inputs; so does the user)."""
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    array = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return array[:, :, None] if array.ndim == 2 else array


def as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def check_family(family: str | None, modality: str) -> str | None:
    """None for "no degradation"; a clear error for a family of another modality."""
    if not family or family == NO_DEGRADATION:
        return None
    if family not in list_families(modality):
        raise UserError(f"{family} is not a {modality} degradation; choose from {', '.join(list_families(modality))}")
    return family


def prepare(image: np.ndarray, spec: InputSpec, modality: str, family: str | None = None,
            severity: int = 0, seed: int = 0) -> Prepared:
    """H×W×C uint8 (from `read_image`) → the input `spec` asks for + display copy, degraded if asked."""
    stats = input_statistics(image)
    image = to_channels(image, spec.channels)
    family = check_family(family, modality)
    record = None
    if family is not None and int(severity) > 0:
        image, record = degrade(square(image, WORKING_SIZE), family, int(severity), int(seed))
    chw = load_resized(image, spec)
    tensor = normalise(torch.from_numpy(np.array(chw, copy=True))[None], spec)
    return Prepared(tensor, as_rgb(square(image, DISPLAY_SIZE)), record, stats)


class ImageCache:
    """Decoded uploads by path and modification time: the what-if panel re-runs on every slider
    move, and decoding a large DICOM or TIFF each time would dominate the latency. Bounded in
    count and in bytes (a 40-megapixel upload alone is 120 MB decoded)."""

    def __init__(self, size: int = 16, max_bytes: int = 256 * 2**20):
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = Lock()

    def read(self, source: str | Path | bytes | np.ndarray, slice: int | None = None,
             window: Window | None = None) -> np.ndarray:
        """The decoded image (`slice` and `window` as `read_image` takes them)."""
        if not isinstance(source, (str, Path)):
            return read_image(source, slice=slice, window=window)
        path = Path(source)
        if not path.is_file():
            raise UserError(f"image not found: {path.name}")
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, slice, window)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = read_image(path, slice=slice, window=window)
        with self._lock:
            self._items[key] = image
            while len(self._items) > 1 and (len(self._items) > self.size or
                                            sum(a.nbytes for a in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)
        return image


    def forget(self, folder: Path) -> None:
        """Drop every image read from under `folder` (a visitor's session, as it ends)."""
        folder = Path(folder)
        with self._lock:
            for key in [k for k in self._items if Path(k[0]).is_relative_to(folder)]:
                del self._items[key]


def load_for(model: ZooModel, source: str | Path | None, images: ImageCache, family: str | None = None,
             severity: int = 0, seed: int = 0, slice: int | None = None, window: Window | None = None) -> Prepared:
    """An uploaded or picked file, read (cached) and prepared for `model` (its size, channels,
    normalisation, and its modality's degradation families). DICOM and NIfTI are rendered with
    `window`, else the model's default window (as `mkcnet predict` does), else the file's."""
    if not source:
        raise UserError("upload an image or pick an example first")
    spec = model.config.input
    image = images.read(source, slice=slice, window=window or model_window(spec))
    return prepare(image, spec, model.entry.modality, family, int(severity or 0), int(seed or 0))


def thumbnail(image: np.ndarray, size: int = 160) -> np.ndarray:
    """A small RGB copy for galleries."""
    return as_rgb(square(image, size))
