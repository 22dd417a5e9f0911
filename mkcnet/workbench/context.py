"""What every page shares: the model zoo, the examples, the data folder, and the results packs
(bundled, from a run directory, or evaluated live on the user's data) with their cached
embeddings and OOD curves.

One `Workbench` object is built per app and handed to each page's `build(context)`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.data.dataset import find_split, read_split
from mkcnet.data.images import read_image
from mkcnet.errors import UserError
from mkcnet.inference.results import ResultsPack
from mkcnet.workbench.imaging import ImageCache
from mkcnet.workbench.zoo import REPO_ROOT, ModelZoo, find_pack_dir, load_embeddings, load_pack

log = logging.getLogger("mkcnet.workbench")

ASSETS = REPO_ROOT / "assets"
SPLIT_FILES = ("val.csv", "test.csv", "train.csv", "val.txt", "test.txt", "train.txt")
SYNTH_SOURCES = "synth.csv"  # per-image generator arguments of a synthetic pack (bundled)
OOD_FILE = "ood.csv"  # precomputed LQ-ratio curves (bundled)
OOD_REPEATS = 200


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    modality: str | None = None


@dataclass
class PackEntry:
    """A results pack the Embeddings and OOD pages can show."""

    key: str
    label: str
    pack: ResultsPack | None  # None until first used (bundled packs)
    directory: Path | None = None  # where embeddings.npz, ood.csv, synth.csv may lie
    model: str | None = None  # the zoo model that produced it

    @property
    def method(self) -> str:
        return self.pack.header.get("model", {}).get("method", "?")


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


class Workbench:
    def __init__(self, zoo: ModelZoo | None = None, assets: Path | None = None, data_root: str | Path | None = None):
        self.zoo = zoo if zoo is not None else ModelZoo()
        self.assets = Path(assets) if assets is not None else ASSETS
        self.default_data = str(data_root if data_root is not None else os.environ.get("MKCNET_DATA", ""))
        try:
            data_root_from(self.default_data)
        except UserError as err:  # a wrong MKCNET_DATA must not stop the app: say so, use the bundled examples
            log.warning("ignoring the data folder: %s", err)
            print(f"warning: ignoring the data folder ({err})")
            self.default_data = ""
        self.images = ImageCache()
        self.packs: dict[str, PackEntry] = {}
        self._lock = threading.Lock()
        self._embeddings: dict[tuple, pd.DataFrame] = {}
        self._ood: dict[str, pd.DataFrame] = {}
        for name in self.zoo.names():
            entry = self.zoo.entry(name)
            if entry.pack_dir is not None:
                self.packs[name] = PackEntry(name, entry.title, None, entry.pack_dir, name)

    # ---- examples -------------------------------------------------------------------------

    def bundled_examples(self) -> list[Example]:
        index = self.assets / "examples" / "examples.json"
        if not index.is_file():
            return []
        return [Example(self.assets / "examples" / e["file"], e["caption"], e.get("modality"))
                for e in json.loads(index.read_text())]

    def examples(self, modality: str | None = None, data_root: str | None = None, limit: int = 12) -> list[Example]:
        """The user's images when a data folder is set, else the bundled examples of this
        modality (all of them when none fits)."""
        root = data_root_from(data_root if data_root is not None else self.default_data)
        if root is not None:
            return self.data_examples(root, limit)
        bundled = self.bundled_examples()
        fitting = [e for e in bundled if modality is None or e.modality == modality]
        return fitting or bundled

    def data_examples(self, root: Path, limit: int = 12) -> list[Example]:
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
                        f" · quality {table.quality[i]}") for i in order[:limit]]

    # ---- results packs --------------------------------------------------------------------

    def pack_entry(self, key: str) -> PackEntry:
        with self._lock:
            if key not in self.packs:
                raise UserError(f"unknown results pack {key!r}")
            entry = self.packs[key]
            if entry.pack is None:  # bundled packs load on first use
                entry.pack = self.zoo.pack(entry.model) if entry.model else load_pack(entry.directory)
            return entry

    def pack_choices(self, dataset: str | None = None) -> list[tuple[str, str]]:
        keys = [k for k, e in self.packs.items()
                if dataset is None or e.model is None or self.zoo.entry(e.model).dataset == dataset]
        return [(self.packs[k].label, k) for k in keys]

    def add_run(self, directory: str | Path) -> str:
        """Register a run directory's (or a pack folder's) results pack; returns its key."""
        directory = Path(str(directory).strip()).expanduser()
        pack = load_pack(directory)
        key = str(directory.resolve())
        method = pack.header.get("model", {}).get("method", "run")
        with self._lock:
            self.packs[key] = PackEntry(key, f"{method}: {directory}", pack, find_pack_dir(directory))
        return key

    def evaluate(self, model_name: str, data_root: str | Path, split: str | None = None) -> str:
        """Live re-evaluation: a zoo model on the user's split; the pack joins the list."""
        from mkcnet.inference.evaluate import evaluate_split

        root = data_root_from(data_root)
        if root is None:
            raise UserError("set a data folder first")
        path = find_split(root, split, SPLIT_FILES)
        model = self.zoo.model(model_name)
        with model.lock:
            pack = evaluate_split(model.loaded, path, root, device="cpu", progress=False)
        key = f"{model_name} @ {path}"
        with self._lock:
            self.packs[key] = PackEntry(key, f"{self.zoo.entry(model_name).title} on {path}", pack, None, model_name)
            self._embeddings = {k: v for k, v in self._embeddings.items() if k[0] != key}
            self._ood.pop(key, None)
        return key

    def embedding(self, key: str, branch: str, method: str = "tsne") -> pd.DataFrame:
        """`mkcnet.analysis.embedding.embedding_table` for a pack, from the bundled coordinates
        when the pack carries them (instant), else computed once and kept."""
        from mkcnet.analysis.embedding import embedding_table

        cache_key = (key, branch, method)
        if cache_key in self._embeddings:
            return self._embeddings[cache_key]
        entry = self.pack_entry(key)
        stored = load_embeddings(entry.directory).get(f"{method}/{branch}") if entry.directory else None
        if stored is not None and len(stored) == len(entry.pack.predictions):
            # The table's label columns come from the analysis module (PCA is ~ms); the
            # coordinates from the bundle.
            table = embedding_table(entry.pack, branch, "pca").assign(x=stored[:, 0], y=stored[:, 1])
        else:
            table = embedding_table(entry.pack, branch, method)
        self._embeddings[cache_key] = table
        return table

    def ood_curves(self, key: str) -> pd.DataFrame:
        """`mkcnet.analysis.ood.lq_ratio_curves` for a pack (bundled ones carry them precomputed)."""
        from mkcnet.analysis.ood import lq_ratio_curves

        if key not in self._ood:
            entry = self.pack_entry(key)
            stored = entry.directory / OOD_FILE if entry.directory else None
            if stored is not None and stored.is_file():
                self._ood[key] = pd.read_csv(stored)
            else:
                self._ood[key] = lq_ratio_curves(entry.pack, repeats=OOD_REPEATS)
        return self._ood[key]

    def pack_image(self, key: str, row: int, data_root: str | None = None) -> np.ndarray | None:
        """The image behind a pack row where it can be had: the data folder, the pack's own
        root, or (synthetic packs) regenerated from its seed. None when it cannot."""
        entry = self.pack_entry(key)
        table = entry.pack.predictions
        if not 0 <= row < len(table):
            raise UserError(f"no image #{row} in this pack (it has {len(table)})")
        rel = str(table["image"].iloc[row])
        user_root = data_root_from(data_root if data_root is not None else self.default_data)
        roots = [user_root] if user_root is not None else []
        pack_root = entry.pack.header.get("root")
        if pack_root:
            roots += [Path(pack_root), REPO_ROOT / pack_root]
        for root in roots:
            if (root / rel).is_file():
                return self.images.read(root / rel)
        sources = entry.directory / SYNTH_SOURCES if entry.directory else None
        if sources is not None and sources.is_file():
            return regenerate_synthetic(sources, rel)
        return None


def regenerate_synthetic(sources: Path, image: str) -> np.ndarray | None:
    """A synthetic fundus image rebuilt bit for bit from its generator arguments (the bundle
    ships these, never the images)."""
    from mkcnet.synth import synth_sample

    table = pd.read_csv(sources)
    match = table[table["image"] == image]
    if match.empty:
        return None
    r = match.iloc[0]
    array, _ = synth_sample(int(r["seed"]), int(r["size"]), int(r["diagnosis"]), int(r["quality"]))
    return read_image(array)
