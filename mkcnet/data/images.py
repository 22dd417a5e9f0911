"""Reading one image of any kind a user may hand us, with a clear error for each bad case.

PNG, JPEG, TIFF, BMP (8- or 16-bit, grey, RGB, RGBA, palette) through Pillow; DICOM through
pydicom (rescale slope/intercept, VOI LUT, MONOCHROME1). The result is always uint8 H×W×C
with C = 1 or 3, so everything downstream sees one format.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mkcnet.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom")
# Anything larger is a decompression bomb for our purposes (inputs are resized to ≤512 px).
MAX_PIXELS = 40_000_000


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the uploaded data"


def _is_dicom(head: bytes, source) -> bool:
    return head[128:132] == b"DICM" or str(source).lower().endswith((".dcm", ".dicom"))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8: 8-bit stays as is, wider ranges are min-max scaled."""
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.any():
        raise UserError("the image has no finite pixel values")
    lo, hi = float(array[finite].min()), float(array[finite].max())
    scaled = (np.nan_to_num(array, nan=lo) - lo) / max(hi - lo, 1e-8)
    return (scaled * 255 + 0.5).clip(0, 255).astype(np.uint8)


def _read_dicom(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds:
        raise UserError("the DICOM file holds no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise UserError(f"the DICOM image is too large ({cols}×{rows} pixels)")
    pixels = ds.pixel_array
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame series: show the middle slice
    if ds.get("SamplesPerPixel", 1) == 1:
        pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
        if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
            pixels = pixels.max() - pixels
    return _to_uint8(np.asarray(pixels))


def _read_pillow(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"the image is too large ({image.width}×{image.height} pixels)")
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError("the image is too large (decompression bomb protection)") from None
    # A photograph's EXIF orientation: the pixels as a viewer shows them (a no-op without the tag).
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Composite transparency over black, as a viewer would show a medical image.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
    elif image.mode == "CMYK" or image.mode == "YCbCr":
        image = image.convert("RGB")
    elif image.mode == "1":
        image = image.convert("L")
    return _to_uint8(np.asarray(image))


def read_image(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """Any supported image → uint8 array H×W×C (C = 1 or 3). Raises UserError when it can't."""
    if isinstance(source, Image.Image):
        source = np.asarray(source.convert("RGB") if source.mode in ("RGBA", "P", "LA", "CMYK") else source)
    if isinstance(source, np.ndarray):
        array = source
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise UserError(f"image not found: {path}")
            data = path.read_bytes()
        else:
            data = bytes(source)
        if not data:
            raise UserError(f"cannot read {_name(source)}: the file is empty")
        try:
            array = _read_dicom(data) if _is_dicom(data[:132], source) else _read_pillow(data)
        except UserError as err:
            raise UserError(f"cannot read {_name(source)}: {err}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
            kind = "not an image or an unsupported format" if isinstance(err, UnidentifiedImageError) else err
            raise UserError(f"cannot read {_name(source)}: {kind}") from None
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds on a damaged file
            raise UserError(f"cannot read {_name(source)}: {type(err).__name__}: {err}") from None
    array = _to_uint8(np.asarray(array))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UserError(f"cannot read {_name(source)}: unsupported image shape {array.shape}")
    return array[:, :, :3] if array.shape[2] == 4 else array


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey ↔ RGB conversion (ITU-R 601 luma for RGB → grey)."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return (luma + 0.5).clip(0, 255).astype(np.uint8)[:, :, None]
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    raise UserError(f"unsupported channel count {channels} (use 1 or 3)")


def load_resized(source, channels: int, size: int) -> np.ndarray:
    """Read, convert to `channels` and resize to size×size: uint8 C×H×W, ready for a model."""
    return fit_to_model(read_image(source), channels, size)


def fit_to_model(image: np.ndarray, channels: int, size: int) -> np.ndarray:
    """A decoded H×W×C image converted to `channels` and resized to size×size: uint8 C×H×W."""
    image = to_channels(image, channels)
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    array = np.asarray(pil)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
