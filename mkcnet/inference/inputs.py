"""What `mkcnet predict` is given: image files, folders and list files, resolved to files.

Torch-free and pandas-free unless a list file is read, so the onnxruntime path starts light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mkcnet.data.images import IMAGE_SUFFIXES, is_image_name
from mkcnet.errors import UserError


@dataclass(frozen=True)
class Inputs:
    files: list[Path]  # to read, in order
    skipped: list[Path]  # found in folders but not images by their name (listed, never silently dropped)
    not_files: list[Path] = field(default_factory=list)  # found in folders, not regular files: listed too


def collect_inputs(inputs: list[str | Path]) -> Inputs:
    """Image files, folders (their images, sorted) and list files (.txt/.csv, first column).

    In a folder, what is not an image by its name is `skipped`, and what is not a regular file (a
    FIFO, a socket, a broken or looping link, a folder named like an image, a linked folder, which
    is not followed) is `not_files`: both are listed to the user, never dropped in silence.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> (folder / "b.png").mkdir()
        >>> found = collect_inputs([folder])
        >>> [p.name for p in found.files], [p.name for p in found.skipped], [p.name for p in found.not_files]
        (['a.png'], ['notes.txt'], ['b.png'])
    """
    files: list[Path] = []
    skipped: list[Path] = []
    not_files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found, odd = [], []
            for p in sorted(item.rglob("*")):
                if p.name.startswith("."):
                    continue
                if p.is_file():
                    found.append(p)
                elif not p.is_dir() or p.is_symlink() or is_image_name(p):
                    odd.append(p)
            images = [p for p in found if is_image_name(p)]
            if not images:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += images
            skipped += [p for p in found if not is_image_name(p)]
            not_files += odd
        elif item.suffix.lower() in (".txt", ".csv"):
            files += read_list_file(item)
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"input not found: {item}")
    return Inputs(files, skipped, not_files)


def read_list_file(path: Path) -> list[Path]:
    """The image paths of a list file (first column; a .csv has a header), relative to its folder."""
    if not path.is_file():
        raise UserError(f"list file not found: {path}")
    import pandas as pd  # only for list files: the onnxruntime path stays light

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, header=None if path.suffix == ".txt" else 0)
    except pd.errors.EmptyDataError:
        raise UserError(f"list file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split()).removeprefix("Error tokenizing data. C error: ")
        raise UserError(f"cannot read list file {path}: {reason}") from None
    first_row = 1 if path.suffix == ".txt" else 2  # a .csv's header is line 1
    for row, name in enumerate(table.iloc[:, 0], start=first_row):
        if "\0" in name:  # the OS refuses such a name with a ValueError, not an OSError
            raise UserError(f"{path.name}, line {row}: the file name holds a NUL byte")
    files = [path.parent / p.strip() for p in table.iloc[:, 0] if p.strip()]
    if not files:
        raise UserError(f"list file {path} names no images")
    return files
