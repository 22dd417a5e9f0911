"""Split files, the decoded-image cache and batching.

Split format (the paper's and ours): a CSV or TXT file with a header and rows
`image_path,diagnosis,quality`, paths relative to the data-set root. Columns are read by
position, so the paper's `image_name,DR_label,IQ_label` files load unchanged. The quality
column may be missing (diagnosis-only data); it is then -1.

Every image is decoded and resized once into a uint8 tensor (decoding from disk every
epoch costs ~20 % of a CPU epoch), kept in memory and on disk between runs.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mkcnet.config import InputSpec
from mkcnet.data.images import IMAGE_SUFFIXES, load_resized
from mkcnet.errors import UserError
from mkcnet.files import atomic_write, remove_temporaries, write_failure

UNKNOWN = -1


@dataclass
class SplitTable:
    """The labels of one split. Paths are as written in the file; `root` resolves them."""

    root: Path
    paths: list[str]
    diagnosis: np.ndarray
    quality: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def files(self) -> list[Path]:
        return [self.root / p for p in self.paths]

    def subset(self, index: np.ndarray) -> SplitTable:
        return SplitTable(self.root, [self.paths[i] for i in index], self.diagnosis[index], self.quality[index])


def find_split(root: Path, name: str | None = None, fallbacks: Sequence[str] = ()) -> Path:
    """A split file in `root`: `val` → ROOT/val.csv, a name with a suffix as it is; without a
    name, the first of `fallbacks` that exists."""
    root = Path(root)
    candidates = [name if Path(name).suffix else f"{name}.csv"] if name else list(fallbacks)
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise UserError(f"split file {candidates[0] if candidates else '(none named)'} not found in {root}")


def read_split(path: str | Path, root: str | Path | None = None, diagnosis_map: dict[int, int] | None = None,
               num_diagnosis: int | None = None, num_quality: int | None = None,
               allow_outside_root: bool = False, quality_map: dict[int, int] | None = None) -> SplitTable:
    """Read a split file, remap diagnosis and quality labels, and check every label is in range and every
    image path stays inside the data-set root (split files are untrusted: a row may name any
    file; `allow_outside_root` is for trusted local data only). Every problem is one line naming
    the file and the row (its line in the file).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "val.csv").write_text("image,diagnosis,quality\\na.png,1,0\\nb.png,0,1\\n")
        >>> read_split(folder / "val.csv", num_diagnosis=2, num_quality=2).diagnosis.tolist()
        [1, 0]
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file not found: {path}")
    header, rows, lines = _read_rows(path)
    if len(header) < 2:
        raise UserError(f"{path.name}: one column found ({header[0][:40]!r}); expected comma-separated "
                        "image_path,diagnosis[,quality]")
    if Path(header[0]).suffix.lower() in IMAGE_SUFFIXES or re.fullmatch(r"-?\d+", header[1].strip()):
        raise UserError(f"{path.name}: the first line looks like a row, not a header ({','.join(header)[:60]}); "
                        "add a header line such as image_path,diagnosis,quality")
    if not rows:
        raise UserError(f"{path.name}: a header and no rows")
    labels = [_labels(path, header[column], [r[column] if column < len(r) else "" for r in rows], lines)
              for column in range(1, min(len(header), 3))]
    diagnosis = labels[0]
    quality = labels[1] if len(labels) > 1 else np.full(len(rows), UNKNOWN, np.int64)
    if (diagnosis < 0).any():
        row = int(np.flatnonzero(diagnosis < 0)[0])
        raise UserError(f"{path.name}, row {lines[row]}: diagnosis {diagnosis[row]}: every row needs a diagnosis label "
                        f"(-1, unlabelled, is accepted for the quality only)")
    if diagnosis_map:
        diagnosis = _remap(path, "diagnosis", diagnosis, diagnosis_map)
    if quality_map:
        quality = _remap(path, "quality", quality, quality_map)
    for name, values, count in (("diagnosis", diagnosis, num_diagnosis), ("quality", quality, num_quality)):
        if count is None:
            continue
        wrong = (values != UNKNOWN) & ((values < 0) | (values >= count))
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise UserError(f"{path.name}, row {lines[row]}: {name} label {values[row]} is out of range "
                            f"(expected 0..{count - 1})")
    paths = [r[0].strip() for r in rows]
    check_duplicates(path, paths, diagnosis, quality, lines)
    root = Path(root) if root is not None else path.parent
    check_paths(path, root, paths, lines, allow_outside_root)
    return SplitTable(root, paths, diagnosis, quality)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the rows and each row's line, by the csv module (pandas would take a first row
    with one field too many as an index column and blame the next row). A row with more fields than
    the header, a quote left open or a NUL byte is one line naming its row; blank lines are skipped."""
    records: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True, strict=True)
            for fields in reader:
                if any(field.strip() for field in fields):
                    records.append(fields)
                    lines.append(start)
                start = reader.line_num + 1
    except csv.Error as err:
        what = "a NUL byte" if "NUL" in str(err) else "a quote left open" if "end of data" in str(err) else str(err)
        raise UserError(f"{path.name}, row {start}: cannot parse ({what})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"cannot parse split file {path}: not UTF-8 text (byte {err.start})") from None
    if not records:
        raise UserError(f"{path.name}: empty; expected a header line such as image_path,diagnosis,quality")
    header, rows = records[0], records[1:]
    for fields, line in zip(rows, lines[1:]):
        if len(fields) > len(header):
            raise UserError(f"{path.name}, row {line}: {len(fields)} fields, but the header names {len(header)} "
                            f"({','.join(header)[:60]})")
    return header, rows, lines[1:]


def _labels(path: Path, column: str, raw: list[str], lines: list[int]) -> np.ndarray:
    """One label column as integers; a value that is not an integer, or too large for a class index
    (`inf`, `99999999999999999999`), is one line naming its row."""
    values = pd.to_numeric(pd.Series([v.strip() for v in raw], dtype=object), errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path.name}, row {lines[row]}: {column} must be an integer, got {raw[row][:40]!r}")
    huge = np.abs(values) >= 2**31
    if huge.any():
        row = int(np.flatnonzero(huge)[0])
        raise UserError(f"{path.name}, row {lines[row]}: {column} label {raw[row].strip()[:40]} is out of range "
                        "(a class index)")
    return values.astype(np.int64)


def _remap(path: Path, name: str, values: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Labels through a data set's own mapping (unknown quality, −1, stays −1)."""
    unknown = sorted(set(values.tolist()) - set(mapping) - {UNKNOWN})
    if unknown:
        raise UserError(f"{path.name}: {name} values {unknown} have no mapping in {mapping}")
    return np.array([v if v == UNKNOWN else mapping[int(v)] for v in values], np.int64)


def check_duplicates(split: Path, paths: list[str], diagnosis: np.ndarray, quality: np.ndarray,
                     lines: Sequence[int] | None = None) -> None:
    """The same image twice with other labels is an error; twice with the same labels a warning
    (it would count double). `lines`: each row's line in the file (default: row i on line i + 2)."""
    lines = lines if lines is not None else range(2, len(paths) + 2)
    first: dict[str, int] = {}
    repeats = []
    for row, name in enumerate(Path(p).as_posix() for p in paths):
        if name not in first:
            first[name] = row
            continue
        seen = first[name]
        if (diagnosis[seen], quality[seen]) != (diagnosis[row], quality[row]):
            raise UserError(f"{split.name}, rows {lines[seen]} and {lines[row]}: {name[:80]!r} has conflicting labels "
                            f"(diagnosis {diagnosis[seen]} / {diagnosis[row]}, quality {quality[seen]} / {quality[row]})")
        repeats.append((lines[seen], lines[row], name))
    if repeats:
        seen, row, name = repeats[0]
        more = f" and {len(repeats) - 1} more" if len(repeats) > 1 else ""
        warnings.warn(f"{split.name}: rows {seen} and {row} name the same image {name[:80]!r}{more}: it is used as "
                      "often as it is listed (and decoded once)", UserWarning, stacklevel=3)


def check_paths(split: Path, root: Path, paths: list[str], lines: Sequence[int], allow_outside_root: bool = False) -> None:
    """Every row's file name can be looked up (no NUL byte, no over-long name, no link loop) and, links
    resolved, lies inside `root` (unless `allow_outside_root`); else one line naming the row.
    Each distinct name is looked at once."""
    base = root.resolve()
    seen: set[str] = set()
    for relative, line in zip(paths, lines):
        if relative in seen:
            continue
        seen.add(relative)
        shown = repr(relative[:60] + ("…" if len(relative) > 60 else ""))
        if "\0" in relative:
            raise UserError(f"{split.name}, row {line}: {shown} contains a NUL byte")
        file = root / relative
        try:
            resolved = file.resolve()
            file.is_file()  # raises for a name the file system refuses (too long)
        except RuntimeError:  # Python < 3.13: resolve() on a link loop
            raise UserError(f"{split.name}, row {line}: {shown} is a symbolic-link loop") from None
        except OSError as err:
            reason = "a symbolic-link loop" if err.errno == errno.ELOOP else (err.strerror or type(err).__name__).lower()
            raise UserError(f"{split.name}, row {line}: {shown} cannot be looked up ({reason})") from None
        if not allow_outside_root and not resolved.is_relative_to(base):
            raise UserError(f"{split.name}, row {line}: {shown} lies outside the data-set root "
                            "(absolute paths, '..' and links out of it are refused)")


def _cache_dir() -> Path:
    return Path(os.environ.get("MKCNET_CACHE", Path.home() / ".cache" / "mkcnet"))


def decode_images(files: list[Path], spec: InputSpec, cache: bool | Path = True, progress: bool = True,
                  workers: int | None = None, done: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Decode and resize every file once (`load_resized`): uint8 tensor N×C×size×size, cached on disk by content key.

    A file listed several times is decoded once. `cache` is the folder the decoded copy is kept in
    (True: `MKCNET_CACHE`, else ~/.cache/mkcnet; False: none; the workbench gives a visitor's data
    their session's folder, which goes with the session). A folder that cannot be written
    (read-only, full) is passed over with a warning. `done(k, n)` hears each of the n images decoded
    (not called when they come from the cache)."""
    unique = list(dict.fromkeys(files))  # in order; rows that name one image share its decoding
    missing = [f for f in unique if not f.is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) not found, e.g. {missing[0]}")
    channels, size = spec.channels, spec.size
    # The window renders DICOM and NIfTI; left out of the key when there is none, so those caches stay valid.
    key = hashlib.sha1((f"{channels}|{size}" + ("" if spec.window is None else f"|{spec.window}")).encode())
    for f in unique:
        stat = f.stat()
        key.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    folder = _cache_dir() if cache is True else Path(cache) if cache else None
    cache_file = folder / f"{key.hexdigest()}.npy" if folder else None
    out = _read_cache(cache_file) if cache_file else None
    if out is None:
        out = np.empty((len(unique), channels, size, size), np.uint8)

        def work(i: int) -> None:
            out[i] = load_resized(unique[i], spec)

        with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
            for k, _ in enumerate(tqdm(pool.map(work, range(len(unique))), total=len(unique), desc="decoding images",
                                       disable=True if not progress else None, leave=False), 1):
                if done is not None:
                    done(k, len(unique))
        if cache_file:
            _write_cache(cache_file, out)
    images = torch.from_numpy(out)
    if len(unique) < len(files):
        position = {f: i for i, f in enumerate(unique)}
        images = images[torch.tensor([position[f] for f in files])]
    return images


def _read_cache(cache_file: Path) -> np.ndarray | None:
    try:
        return np.load(cache_file) if cache_file.is_file() else None
    except (OSError, ValueError) as err:  # unreadable or damaged: decode again
        warnings.warn(f"image cache {cache_file} cannot be read ({type(err).__name__}); decoding again", stacklevel=3)
        return None


def _write_cache(cache_file: Path, images: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # np.save on a name would add ".npy" to the temporary name
            np.save(f, images)

    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(cache_file.parent)  # of killed writers (their PID gone) only
        atomic_write(cache_file, write)
    except OSError as err:
        reason = write_failure(err, cache_file.parent) or f"{type(err).__name__}: {err}"
        warnings.warn(f"image cache not written ({reason}); continuing without it (set MKCNET_CACHE to a writable "
                      "folder to keep decoded images between runs)", stacklevel=3)


def normalise(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 N×C×H×W → float, (x / 255 − mean) / std per channel with the spec's mean and std: the one
    normalisation that training, evaluation, prediction, the CAMs and the workbench all use (the
    onnxruntime path, which has no torch, does the same in numpy from the same spec)."""
    mean = torch.as_tensor(spec.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


@dataclass
class Batch:
    images: torch.Tensor  # float, normalised, N×C×H×W
    diagnosis: torch.Tensor
    quality: torch.Tensor
    index: torch.Tensor  # rows of the split


class ImageSet:
    """A split held in memory as uint8 (decoded and resized for `spec`), batched with light augmentation done on
    whole batches and normalised for `spec`."""

    def __init__(self, table: SplitTable, images: torch.Tensor, spec: InputSpec):
        self.table = table
        self.images = images
        self.spec = spec
        self.diagnosis = torch.tensor(table.diagnosis, dtype=torch.long)
        self.quality = torch.tensor(table.quality, dtype=torch.long)

    @classmethod
    def load(cls, table: SplitTable, spec: InputSpec, progress: bool = True, cache: bool | Path = True,
             done: Callable[[int, int], None] | None = None) -> ImageSet:
        """The split's images decoded for `spec` (`decode_images`: once, then from the cache)."""
        return cls(table, decode_images(table.files(), spec, cache=cache, progress=progress, done=done), spec)

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at these rows (e.g. a training split resampled to an LQ share)."""
        return ImageSet(self.table.subset(index), self.images[torch.as_tensor(index)], self.spec)

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, every: int = 1,
                drop_singleton: bool = False, shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """Batches in order or shuffled; `every=k` yields only every k-th batch (and builds no others).
        `drop_singleton` leaves out a trailing batch of one image (training: BatchNorm cannot
        normalise a single sample), unless the split holds just that one image (the trainer refuses
        such a split).

        `shard=(rank, ranks)`: this rank's contiguous share of every global batch. Every rank draws
        the same permutation and augmentation from the same generator, so the shares of one
        global batch are exactly the single-process batch. A trailing batch that does not split
        evenly loses its last (size mod ranks) images; one that would leave a rank a single image
        (with drop_singleton) is left out."""
        rank, ranks = shard
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size * every):
            idx = order[start:start + batch_size]
            if ranks > 1:
                idx = idx[:len(idx) - len(idx) % ranks]
            per_rank = len(idx) // ranks
            if per_rank == 0 or (drop_singleton and per_rank == 1 and len(self) > 1):
                continue
            rows = range(rank * per_rank, (rank + 1) * per_rank)
            local = idx[rows.start:rows.stop]
            # Augmentation is drawn for the whole global batch, so every rank's generator stays in step.
            images = augment_batch(self.images[idx], generator, rows=rows) if augment else self.images[local]
            yield Batch(normalise(images, self.spec), self.diagnosis[local], self.quality[local], local)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None, shift: float = 0.08,
                  rows: Sequence[int] | None = None) -> torch.Tensor:
    """Random horizontal flips and translations (reflect-padded) of a uint8 batch, each image its
    own. torchvision's functional ops on uint8, with the parameters drawn from `generator` so a
    seeded run augments identically (3-4x faster than one gather over the padded batch, on CPU).
    `rows`: augment (and return) only these images, with the draws of the whole batch."""
    from torchvision.transforms.v2 import functional as F

    n, _, h, w = images.shape
    pad = max(1, int(round(shift * h)))
    flip = (torch.rand(n, generator=generator) < 0.5).tolist()
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
    rows = range(n) if rows is None else rows
    out = torch.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
    for j, i in enumerate(rows):
        image = F.horizontal_flip(images[i]) if flip[i] else images[i]
        out[j] = F.crop(F.pad(image, [pad], padding_mode="reflect"), dy[i], dx[i], h, w)
    return out
