"""The shared mechanism under every degradation family.

A family is two pure functions: `sample_params(rng, severity, shape) -> dict` draws every
random choice up front (noise fields get a recorded `noise_seed`), and
`apply(image, params) -> image` is deterministic given those params. That split is what
makes any degraded image replayable from its JSON record.

Images inside the package are float32 arrays in [0, 1] of shape (H, W, C), C = 1 or 3;
`to_float01` / `from_float01` convert from and back to what the caller gave us.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mkcnet.errors import UserError

Params = dict[str, Any]
Sampler = Callable[[np.random.Generator, int, tuple[int, ...]], Params]
Applier = Callable[[np.ndarray, Params], np.ndarray]

SEVERITIES = (1, 2, 3, 4, 5)
MODALITIES = ("fundus", "xray", "ct", "oct")
REFERENCE_SIDE = 256  # pixel-valued parameters are tabulated for a 256 px image and scaled


@dataclass(frozen=True)
class Family:
    """One degradation family: a name like "ct.streak", its sampler, its applier and docs."""

    name: str
    modality: str
    summary: str
    sample_params: Sampler
    apply: Applier
    scale: tuple[str, ...] = field(default=())  # what severity 1..5 means, for the docs table


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in _REGISTRY:
        raise ValueError(f"degradation family {family.name!r} registered twice")
    if family.modality not in MODALITIES:
        raise ValueError(f"unknown modality {family.modality!r}")
    _REGISTRY[family.name] = family
    return family


def registry() -> dict[str, Family]:
    return _REGISTRY


def size_factor(shape: tuple[int, ...]) -> float:
    """How much bigger than the 256 px reference this image is (shorter side)."""
    return min(shape[0], shape[1]) / REFERENCE_SIDE


def in_band(rng: np.random.Generator, bands: tuple[float, ...], severity: int) -> float:
    """A value drawn uniformly between bands[severity-1] and bands[severity].

    Six increasing (or decreasing) band edges give five non-overlapping severity intervals,
    so the degradation strength is monotonic in severity by construction.
    """
    lo, hi = bands[severity - 1], bands[severity]
    return float(lo + (hi - lo) * rng.random())


def new_seed(rng: np.random.Generator) -> int:
    """A recorded seed for a noise field drawn inside `apply`."""
    return int(rng.integers(0, 2**31 - 1))


# --- conversion between the caller's image and float01 (H, W, C) ----------------------------


@dataclass(frozen=True)
class ImageKind:
    """Enough about the caller's image to give back the same kind, dtype and shape."""

    pil_mode: str | None  # None for numpy input
    dtype: str
    shape: tuple[int, ...]
    alpha: np.ndarray | None = None  # RGBA alpha, passed through untouched


_INT_RANGE = {"uint8": 255.0, "uint16": 65535.0}


def to_float01(image: Any) -> tuple[np.ndarray, ImageKind]:
    """(H, W, C) float32 in [0, 1] plus what we need to convert back."""
    if isinstance(image, Image.Image):
        mode = image.mode
        alpha = None
        if mode in ("RGBA", "LA"):
            alpha = np.asarray(image.getchannel("A"))
            image = image.convert("RGB" if mode == "RGBA" else "L")
        elif mode in ("I;16", "I"):  # 16-bit grey (PNG); "I" is int32 holding 16-bit values
            arr = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            return _array_to_float01(arr)[0], ImageKind(mode, "uint16", arr.shape)
        elif mode == "F":
            arr = np.asarray(image, dtype=np.float32)
            return _array_to_float01(arr)[0], ImageKind(mode, "float32", arr.shape)
        elif mode not in ("L", "RGB"):
            image = image.convert("RGB")  # palette, CMYK, ...: come back as RGB
            mode = "RGB"
        arr = np.asarray(image)
        return _array_to_float01(arr)[0], ImageKind(mode, "uint8", arr.shape, alpha)
    if isinstance(image, np.ndarray):
        return _array_to_float01(image)
    raise UserError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


def _array_to_float01(arr: np.ndarray) -> tuple[np.ndarray, ImageKind]:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
        raise UserError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {arr.shape}")
    kind = ImageKind(None, arr.dtype.name, arr.shape)
    if arr.dtype.name in _INT_RANGE:
        out = arr.astype(np.float32) / _INT_RANGE[arr.dtype.name]
    elif np.issubdtype(arr.dtype, np.floating):
        out = np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise UserError(f"unsupported image dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
    return (out[..., None] if out.ndim == 2 else out), kind


def from_float01(arr: np.ndarray, kind: ImageKind) -> Any:
    """Back to the caller's kind; values are clipped to [0, 1] and rounded for integers."""
    arr = np.clip(arr, 0.0, 1.0)
    if kind.dtype in _INT_RANGE:
        out = np.rint(arr * _INT_RANGE[kind.dtype]).astype(kind.dtype)
    else:
        out = arr.astype(kind.dtype)
    if kind.pil_mode is None:
        return out.reshape(kind.shape)
    out = out[..., 0] if out.shape[2] == 1 else out
    if kind.pil_mode == "I":
        return Image.fromarray(out).convert("I")
    if kind.alpha is not None:
        base = Image.fromarray(out)
        base.putalpha(Image.fromarray(kind.alpha))
        return base
    return Image.fromarray(out)
