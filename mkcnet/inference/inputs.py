"""What `mkcnet predict` is given: image files, folders and list files, resolved to files.

Torch-free and pandas-free unless a list file is read, so the onnxruntime path starts light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mkcnet.data.images import IMAGE_SUFFIXES, is_image_name
from mkcnet.errors import UserError


@dataclass(frozen=True)
class Inputs:
    files: list[Path]  # to read, in order
    skipped: list[Path]  # found in folders but not images by their name (listed, never silently dropped)


def collect_inputs(inputs: list[str | Path]) -> Inputs:
    """Image files, folders (their images, sorted) and list files (.txt/.csv, first column)."""
    files: list[Path] = []
    skipped: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file())
            images = [p for p in found if is_image_name(p)]
            if not images:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += images
            skipped += [p for p in found if not is_image_name(p) and not p.name.startswith(".")]
        elif item.suffix.lower() in (".txt", ".csv"):
            if not item.is_file():
                raise UserError(f"list file not found: {item}")
            import pandas as pd  # only for list files: the onnxruntime path stays light

            table = pd.read_csv(item, dtype=str, keep_default_na=False, header=None if item.suffix == ".txt" else 0)
            files += [item.parent / p.strip() for p in table.iloc[:, 0] if p.strip()]
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"input not found: {item}")
    return Inputs(files, skipped)
