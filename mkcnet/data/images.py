"""Reading one image of any kind a user may hand us, with a clear error for each bad case.

PNG, JPEG, TIFF, BMP, GIF, WebP through Pillow; DICOM (a file, multi-frame, or a folder holding one
series) through pydicom ≥ 3; NIfTI (.nii, .nii.gz) through nibabel. The result is always uint8
H×W×C with C = 1 or 3, so everything downstream sees one format. One rule each, for every format:

- **Bit depth.** Plain images (PNG, TIFF, JPEG, …) are scaled by their sample type's full range:
  8-bit as it is, 16-bit ÷ 257, never stretched per image, so the same slice saved at 8 or 16 bits
  reads the same. Float samples are taken as 0-1 (clipped) when they lie there, else scaled by
  the min-max of the whole file.
- **Physical units and windows.** DICOM pixels go through the modality LUT (RescaleSlope /
  RescaleIntercept: CT in Hounsfield units), NIfTI voxels through scl_slope / scl_inter; then a
  `Window` maps centre ± width/2 linearly to black…white. The window is the one asked for (the
  user's, else the model's default: `ModelConfig.window`, a lung window for the CT models), else
  the file's own (DICOM WindowCenter/Width, or its VOI LUT), else the min-max of the whole volume.
  MONOCHROME1 is inverted after the window.
- **Slices.** A file or series with several frames or slices (multi-frame DICOM, a DICOM series
  folder, a NIfTI volume, a multi-frame TIFF, an animated GIF) gives the slice asked for, 0-based,
  else the middle one (`Volume.middle`). A NIfTI volume is read in its closest canonical (RAS+)
  orientation and sliced axially, shown as radiologists do: anterior up, the patient's right on
  the image's left; a 4-D NIfTI gives its first volume.

    volume = read_volume("scan.nii.gz", window=window_preset("lung"))
    image = volume.image(volume.middle)          # uint8 H×W×1
    read_image("scan.dcm", slice=2, window=Window(40, 400))
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from mkcnet.config import InputSpec
from mkcnet.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom", ".nii",
                  ".nii.gz")
# Anything larger is a decompression bomb for our purposes (inputs are resized to ≤512 px).
MAX_PIXELS = 40_000_000
MAX_VOLUME_VALUES = 128_000_000  # voxels of one volume (512 MB as float32)


def is_image_name(path: str | Path) -> bool:
    """Whether a file name says image (".nii.gz" included)."""
    name = Path(path).name.lower()
    return name.endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Window:
    """A display window in the pixels' own units (CT: Hounsfield units): centre − width/2 is black,
    centre + width/2 white, linear between (DICOM's linear VOI function without its half-grey-level
    offsets).

    >>> Window(-600, 1500).apply(np.array([-1350.0, -600.0, 150.0])).tolist()
    [0, 128, 255]
    """

    centre: float
    width: float
    name: str = ""

    def __post_init__(self):
        if not self.width > 0:
            raise UserError(f"a window's width must be positive, got {self.width:g}")

    def apply(self, values: np.ndarray) -> np.ndarray:
        low = self.centre - self.width / 2
        scaled = (np.asarray(values, np.float64) - low) / self.width
        return (np.nan_to_num(scaled, nan=0.0) * 255 + 0.5).clip(0, 255).astype(np.uint8)

    def describe(self) -> str:
        named = f"{self.name} " if self.name else ""
        return f"{named}window (C {self.centre:g}, W {self.width:g})"


# Common CT windows (Hounsfield units), as radiology viewers preset them.
WINDOW_PRESETS = (Window(-600, 1500, "lung"), Window(40, 400, "mediastinum"), Window(50, 350, "abdomen"),
                  Window(400, 1800, "bone"), Window(40, 80, "brain"))


def window_preset(name: str) -> Window:
    found = next((w for w in WINDOW_PRESETS if w.name == name.lower()), None)
    if found is None:
        raise UserError(f"unknown window {name!r}; choose from {', '.join(w.name for w in WINDOW_PRESETS)} or C,W")
    return found


def parse_window(text: str) -> Window:
    """"C,W" (e.g. "-600,1500") or a preset's name ("lung")."""
    parts = text.replace(" ", "").split(",")
    if len(parts) == 1:
        return window_preset(parts[0])
    try:
        centre, width = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"a window is CENTRE,WIDTH (e.g. -600,1500) or a preset name, got {text!r}") from None
    return Window(centre, width)


def model_window(spec: InputSpec) -> Window | None:
    """A model's default window (its `InputSpec.window`: `ModelConfig.input`, or an exported model's), if it has one."""
    return None if spec.window is None else Window(spec.window[0], spec.window[1], "model default")


@dataclass(frozen=True)
class Volume:
    """The slices of one file or series, before rendering: `values` N×H×W(×C). `window` and
    `window_source` ("asked", "file", "range", or "" for plain images) say how `image` renders."""

    values: np.ndarray
    kind: str  # "PNG", "DICOM", "DICOM series", "NIfTI", …
    window: Window | None = None
    window_source: str = ""
    monochrome1: bool = False
    voi: object = None  # a DICOM dataset whose VOI LUT renders the slices (window_source "file")

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def middle(self) -> int:
        return self.count // 2

    def index(self, slice: int | None) -> int:
        k = self.middle if slice is None else int(slice)
        if not 0 <= k < self.count:
            raise UserError(f"slice {k} does not exist: this {self.kind} has {self.count} slice(s), 0-{self.count - 1}")
        return k

    def image(self, slice: int | None = None) -> np.ndarray:
        """Slice `slice` (default: the middle one) as uint8 H×W×C."""
        frame = self.values[self.index(slice)]
        if self.voi is not None:
            from pydicom.pixels import apply_voi_lut

            frame = apply_voi_lut(frame, self.voi)
            lo, hi = float(np.min(frame)), float(np.max(frame))  # the LUT's own output range
            out = Window((lo + hi) / 2, max(hi - lo, 1e-6)).apply(frame)
        elif self.window is not None:
            out = self.window.apply(frame)
        else:
            out = np.asarray(frame)
        if self.monochrome1:
            out = 255 - out
        return out[:, :, None] if out.ndim == 2 else out

    def describe(self, slice: int | None = None) -> str:
        """"slice 2 of 3 (0-based), lung window (C -600, W 1500)": for readings and reports."""
        parts = [f"slice {self.index(slice)} of {self.count} (0-based)"] if self.count > 1 else []
        if self.window_source == "range":
            parts.append("no window in the file: its own value range")
        elif self.window is not None:
            parts.append(self.window.describe() + (" from the file" if self.window_source == "file" else ""))
        elif self.voi is not None:
            parts.append("the file's VOI LUT")
        return ", ".join(parts)


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the uploaded data"


def _is_dicom(head: bytes, source) -> bool:
    return head[128:132] == b"DICM" or str(source).lower().endswith((".dcm", ".dicom"))


def _is_nifti(data: bytes, source) -> bool:
    if str(source).lower().endswith((".nii", ".nii.gz")):
        return True
    return data[344:348] == b"n+1\0" or data[4:8] == b"n+2\0"  # single-file NIfTI-1 / NIfTI-2


def _bounded(values: np.ndarray | tuple[int, ...]) -> None:
    shape = values if isinstance(values, tuple) else values.shape
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOLUME_VALUES:
        raise UserError(f"the volume is too large ({'×'.join(map(str, shape))} values)")


def _range_window(values: np.ndarray) -> Window:
    finite = np.isfinite(values)
    if not finite.any():
        raise UserError("the image has no finite pixel values")
    lo, hi = float(values[finite].min()), float(values[finite].max())
    return Window((lo + hi) / 2, max(hi - lo, 1e-6), "full range")


def _physical(values: np.ndarray, kind: str, window: Window | None, file_window: Window | None,
              monochrome1: bool = False, voi=None) -> Volume:
    """A volume in physical units, with the window of the module docstring's order."""
    if window is not None:
        return Volume(values, kind, window, "asked", monochrome1)
    if file_window is not None:
        return Volume(values, kind, file_window, "file", monochrome1)
    if voi is not None:
        return Volume(values, kind, None, "file", monochrome1, voi)
    return Volume(values, kind, _range_window(values), "range", monochrome1)


def _file_window(ds) -> Window | None:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
    return Window(first(centre), first(width))


def _dicom_frames(ds) -> np.ndarray:
    """N×H×W(×3) after the modality LUT (float64 for grey, as stored for colour)."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise UserError("the DICOM file holds no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols > MAX_PIXELS:
        raise UserError(f"the DICOM image is too large ({cols}×{rows} pixels)")
    _bounded((frames, rows, cols))
    pixels = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1:
        pixels = np.asarray(apply_modality_lut(pixels, ds), np.float64)
        return pixels if frames > 1 else pixels[None]
    return pixels if frames > 1 else pixels[None]


def _dicom_volume(datasets: list, kind: str, window: Window | None) -> Volume:
    first = datasets[0]
    frames = np.concatenate([_dicom_frames(ds) for ds in datasets])
    if int(first.get("SamplesPerPixel", 1)) != 1:  # colour: no window, the stored bit depth
        return Volume(_plain_uint8(frames), kind)
    voi = first if "VOILUTSequence" in first else None
    return _physical(frames, kind, window, _file_window(first),
                     first.get("PhotometricInterpretation", "") == "MONOCHROME1", voi)


def _read_dicom(data: bytes, window: Window | None) -> Volume:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return _dicom_volume([ds], "DICOM" if int(ds.get("NumberOfFrames", 1) or 1) == 1 else "multi-frame DICOM", window)


def _read_series(folder: Path, window: Window | None) -> Volume:
    """A folder of one DICOM series, ordered along the slice axis (else by InstanceNumber)."""
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f))
        except Exception:  # noqa: BLE001 - not DICOM (a DICOMDIR, a note): skipped, the count says so
            continue
    datasets = [ds for ds in datasets if "PixelData" in ds]
    if not datasets:
        raise UserError(f"no DICOM images in folder {folder.name}")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise UserError(f"folder {folder.name} holds {len(series)} DICOM series; put one series per folder")

    def position(ds) -> float:
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if ipp is not None and iop is not None:  # the distance along the slices' normal
            normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
            return float(np.dot(normal, np.asarray(ipp, float)))
        return float(ds.get("InstanceNumber", 0) or 0)

    datasets.sort(key=position)
    return _dicom_volume(datasets, "DICOM series", window)


def _read_nifti(data: bytes, window: Window | None) -> Volume:
    import nibabel as nib

    if data[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            data = f.read(MAX_VOLUME_VALUES * 8 + 1)  # the largest float64 volume we accept, plus one byte
        if len(data) > MAX_VOLUME_VALUES * 8:
            raise UserError("the NIfTI volume is too large")
    klass = nib.Nifti2Image if data[4:8] == b"n+2\0" else nib.Nifti1Image
    image = klass.from_bytes(data)
    _bounded(tuple(int(s) for s in image.shape[:3]))
    if len(image.shape) < 2:
        raise UserError(f"the NIfTI file holds a {len(image.shape)}-D array, not an image")
    if len(image.shape) > 3:
        image = image.slicer[..., 0] if len(image.shape) == 4 else image.slicer[(..., *([0] * (len(image.shape) - 3)))]
    image = nib.as_closest_canonical(image)
    volume = np.asarray(image.get_fdata(dtype=np.float32))
    if volume.ndim == 2:
        volume = volume[:, :, None]
    # [x, y, z] in RAS+ → z × rows (anterior first) × columns (the patient's right first).
    slices = np.ascontiguousarray(volume[::-1, ::-1, :].transpose(2, 1, 0))
    return _physical(slices, "NIfTI volume", window, None)


def _plain_uint8(array: np.ndarray) -> np.ndarray:
    """The bit-depth rule for plain images (module docstring)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype.itemsize == 1:  # int8
            return (array.astype(np.int16) + 128).astype(np.uint8)
        # 16-bit (and Pillow's 32-bit "I" mode, which holds 16-bit PNGs): the 16-bit range.
        return ((np.clip(array, 0, 65535).astype(np.float64) / 257) + 0.5).astype(np.uint8)
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if finite.any() and array[finite].min() >= 0 and array[finite].max() <= 1:
        return (np.nan_to_num(array) * 255 + 0.5).astype(np.uint8)
    return _range_window(array).apply(array)


def _read_pillow(data: bytes) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"the image is too large ({image.width}×{image.height} pixels)")
            frames = [_pillow_frame(f.copy()) for f in ImageSequence.Iterator(image)]
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError("the image is too large (decompression bomb protection)") from None
    if {f.shape for f in frames} != {frames[0].shape}:
        frames = frames[:1]  # frames of different sizes (a TIFF with a thumbnail page): the first, full-size one
    _bounded((len(frames), *frames[0].shape))
    values = np.stack(frames)
    return Volume(_plain_uint8(values), image.format or "image")


def _pillow_frame(image: Image.Image) -> np.ndarray:
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
    return np.asarray(image)


def read_volume(source: str | Path | bytes, window: Window | None = None) -> Volume:
    """Every slice of a file (any supported format) or of a folder holding one DICOM series, with
    the window that renders it (module docstring). Raises UserError when it can't."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        try:
            return _read_series(Path(source), window)
        except UserError as err:
            raise UserError(f"cannot read {_name(source)}: {err}") from None
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds on a damaged file
            raise UserError(f"cannot read {_name(source)}: {type(err).__name__}: {err}") from None
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
        if _is_dicom(data[:132], source):
            return _read_dicom(data, window)
        if _is_nifti(data[:352] if data[:2] != b"\x1f\x8b" else b"", source):
            return _read_nifti(data, window)
        return _read_pillow(data)
    except UserError as err:
        raise UserError(f"cannot read {_name(source)}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        kind = "not an image or an unsupported format" if isinstance(err, UnidentifiedImageError) else err
        raise UserError(f"cannot read {_name(source)}: {kind}") from None
    except Exception as err:  # noqa: BLE001 - pydicom and nibabel raise many kinds on a damaged file
        raise UserError(f"cannot read {_name(source)}: {type(err).__name__}: {err}") from None


def read_image(source: str | Path | bytes | Image.Image | np.ndarray, slice: int | None = None,
               window: Window | None = None) -> np.ndarray:
    """Any supported image → uint8 array H×W×C (C = 1 or 3). Raises UserError when it can't.
    `slice` picks one of several (default: the middle one); `window` renders DICOM and NIfTI
    values (default: the file's own window, else its range). Arrays and PIL images are taken as
    they are, under the same bit-depth rule."""
    if isinstance(source, Image.Image):
        source = np.asarray(source.convert("RGB") if source.mode in ("RGBA", "P", "LA", "CMYK") else source)
    if isinstance(source, np.ndarray):
        array = _plain_uint8(np.asarray(source)) if source.size else source
    else:
        try:
            array = read_volume(source, window).image(slice)
        except UserError as err:
            message = str(err)
            raise UserError(message if message.startswith("cannot read") else f"cannot read {_name(source)}: {message}"
                            ) from None
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


def load_resized(source, spec: InputSpec) -> np.ndarray:
    """Read (DICOM and NIfTI through the spec's window, when it has one, as `mkcnet predict` reads them), convert
    to the spec's channels and resize to its size: uint8 C×H×W, ready for a model."""
    return fit_to_model(read_image(source, window=model_window(spec)), spec)


def fit_to_model(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A decoded H×W×C image converted to the spec's channels and resized to size×size: uint8 C×H×W."""
    image = to_channels(image, spec.channels)
    pil = Image.fromarray(image[:, :, 0] if spec.channels == 1 else image)
    pil = pil.resize((spec.size, spec.size), Image.BILINEAR, reducing_gap=2.0)
    array = np.asarray(pil)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
