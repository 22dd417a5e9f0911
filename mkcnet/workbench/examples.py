"""The images a page offers to pick: the bundled examples (assets/examples/examples.json) or,
when a data folder is set, a spread of the user's own labelled images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mkcnet.config import ModelConfig
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


@dataclass(frozen=True)
class LabelNames:
    """The names a model gives its classes, for the captions of a data set's images; a head the
    model names no classes for is ().

    Example:
        >>> names = LabelNames(("NoDR", "NPDR", "PDR"), ("reject", "usable", "good"))
        >>> names.caption(0, 0), names.caption(5, 2), LabelNames().caption(1, None)
        ('NoDR · reject', 'diagnosis 5 · good', 'diagnosis 1')
    """

    diagnosis: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()

    @staticmethod
    def of(config: ModelConfig) -> LabelNames:
        """A model's names; a head whose names are not one per class has none."""
        def fitting(names: tuple[str, ...], count: int) -> tuple[str, ...]:
            return tuple(names) if len(names) == count else ()

        return LabelNames(fitting(config.diagnosis_names, config.num_diagnosis),
                          fitting(config.quality_names, config.num_quality))

    def caption(self, diagnosis: int, quality: int | None) -> str:
        """A data set's labels in words: each class's name, or "diagnosis 3" where the model has
        no name for it (the data set's label is another task's, or the model names no classes);
        an image without a quality label says none."""
        def named(head: str, names: tuple[str, ...], label: int) -> str:
            return names[label] if 0 <= label < len(names) else f"{head} {label}"

        words = [named("diagnosis", self.diagnosis, diagnosis)]
        if quality is not None:
            words.append(named("quality", self.quality, quality))
        return " · ".join(words)


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


def data_examples(root: Path, limit: int = 12, names: LabelNames | None = None) -> list[Example]:
    """Up to `limit` images of the first split, taken round-robin over (diagnosis, quality)
    cells so that every kind of image shows up; captioned with their labels, in `names` where
    they name them (the labels first: a gallery's caption shows only its start)."""
    names = names or LabelNames()
    table = read_split(find_split(root, fallbacks=SPLIT_FILES), root)
    cells: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(table.diagnosis.tolist(), table.quality.tolist())):
        cells.setdefault(key, []).append(i)
    order = []
    for rank in range(max(map(len, cells.values()), default=0)):
        order += [rows[rank] for _, rows in sorted(cells.items()) if rank < len(rows)]
    examples = []
    for i in order[:limit]:
        diagnosis, quality = int(table.diagnosis[i]), int(table.quality[i]) if table.quality[i] >= 0 else None
        caption = f"{names.caption(diagnosis, quality)} · {Path(table.paths[i]).name}"
        examples.append(Example(table.root / table.paths[i], caption, None, diagnosis, quality))
    return examples
