"""The images a page offers to pick: the bundled examples (assets/examples/examples.json) or,
when a data folder is set, a spread of the user's own labelled images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mkcnet.data.dataset import find_split, read_split
from mkcnet.errors import UserError

SPLIT_FILES = ("val.csv", "test.csv", "train.csv", "val.txt", "test.txt", "train.txt")


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    modality: str | None = None
    diagnosis: int | None = None  # the true labels, where the example has them (class indices)
    quality: int | None = None


def data_root_from(text: str | Path | None) -> Path | None:
    """A data folder from a UI field or MKCNET_DATA; None when empty; a clear error otherwise."""
    text = str(text or "").strip()
    if not text:
        return None
    root = Path(text).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}")
    if not any((root / name).is_file() for name in SPLIT_FILES):
        raise UserError(f"{root} holds no split file ({', '.join(SPLIT_FILES[:3])}): "
                        "expected the project's format, image_path,diagnosis,quality")
    return root


def bundled_examples(assets: Path) -> list[Example]:
    index = assets / "examples" / "examples.json"
    if not index.is_file():
        return []
    return [Example(assets / "examples" / e["file"], e["caption"], e.get("modality"), e.get("diagnosis"),
                    e.get("quality")) for e in json.loads(index.read_text())]


def data_examples(root: Path, limit: int = 12) -> list[Example]:
    """Up to `limit` images of the first split, taken round-robin over (diagnosis, quality)
    cells so that every kind of image shows up."""
    table = read_split(find_split(root, fallbacks=SPLIT_FILES), root)
    cells: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(table.diagnosis.tolist(), table.quality.tolist())):
        cells.setdefault(key, []).append(i)
    order = []
    for rank in range(max(map(len, cells.values()), default=0)):
        order += [rows[rank] for _, rows in sorted(cells.items()) if rank < len(rows)]
    return [Example(table.root / table.paths[i], f"{Path(table.paths[i]).name} · diagnosis {table.diagnosis[i]}"
                    f" · quality {table.quality[i]}", None, int(table.diagnosis[i]),
                    int(table.quality[i]) if table.quality[i] >= 0 else None) for i in order[:limit]]
