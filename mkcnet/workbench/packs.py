"""The results packs the Embeddings and Out-of-distribution pages show: bundled with a zoo
model, added from a run directory, or evaluated live on the user's data; with their 2-D
embeddings and LQ-ratio curves (precomputed in bundles, else computed once and kept), and the
image behind each row where it can be had."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.data.dataset import find_split
from mkcnet.data.images import read_image
from mkcnet.errors import UserError
from mkcnet.inference.results import ResultsPack, find_pack_dir, load_pack
from mkcnet.progress import Report
from mkcnet.project import find_project_home
from mkcnet.workbench.examples import SPLIT_FILES
from mkcnet.workbench.imaging import ImageCache
from mkcnet.workbench.zoo import ModelZoo

SYNTH_SOURCES = "synth.csv"  # per-image generator arguments of a synthetic pack (bundled)
OOD_FILE = "ood.csv"  # precomputed LQ-ratio curves (bundled)
EMBEDDINGS_FILE = "embeddings.npz"  # precomputed 2-D coordinates (bundled)
OOD_REPEATS = 200


@dataclass
class PackEntry:
    """A results pack a page can show."""

    key: str
    label: str
    pack: ResultsPack | None  # None until first used (bundled packs)
    directory: Path | None = None  # where embeddings.npz, ood.csv, synth.csv may lie
    model: str | None = None  # the zoo model that produced it

    @property
    def method(self) -> str:
        return self.pack.header.get("model", {}).get("method", "?")


def load_embeddings(pack_dir: Path) -> dict[str, np.ndarray]:
    """Precomputed 2-D coordinates, keyed "<method>/<branch>" (empty when none were bundled)."""
    path = pack_dir / EMBEDDINGS_FILE
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k].astype(np.float32) for k in data.files}


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


class PackStore:
    """Results packs, keyed; bundled ones load on first use. The app holds one with the bundled
    packs, shared by every visitor; each visitor's session holds its own on top of it
    (`shared=`), for the packs that visitor adds, so no visitor sees another's. `decoded` is where
    an evaluation keeps its decoded images (`decode_images`' cache): a session's own folder, so
    nothing of a visitor's data outlives the session."""

    def __init__(self, zoo: ModelZoo, images: ImageCache, shared: PackStore | None = None,
                 decoded: bool | Path = True):
        self.zoo = zoo
        self.images = images
        self.shared = shared
        self.decoded = decoded
        self.entries: dict[str, PackEntry] = {}
        self._lock = threading.Lock()
        self._embeddings: dict[tuple, pd.DataFrame] = {}
        self._ood: dict[str, pd.DataFrame] = {}
        if shared is None:
            for name in zoo.names():
                entry = zoo.entry(name)
                if entry.pack_dir is not None:
                    self.entries[name] = PackEntry(name, entry.title, None, entry.pack_dir, name)

    def clear(self) -> None:
        """Forget this store's own packs and what was computed from them."""
        with self._lock:
            self.entries.clear()
            self._embeddings.clear()
            self._ood.clear()

    def _owner(self, key: str) -> PackStore:
        if key in self.entries or self.shared is None or key not in self.shared.entries:
            return self
        return self.shared

    def entry(self, key: str) -> PackEntry:
        owner = self._owner(key)
        with owner._lock:
            if key not in owner.entries:
                raise UserError(f"unknown results pack {str(key)[:80]!r}")
            entry = owner.entries[key]
            if entry.pack is None:
                entry.pack = owner.zoo.pack(entry.model) if entry.model else load_pack(entry.directory)
            return entry

    def choices(self, dataset: str | None = None) -> list[tuple[str, str]]:
        """(label, key) pairs for a dropdown, optionally of one data set's models: the shared
        packs first, then this store's own."""
        inherited = self.shared.choices(dataset) if self.shared is not None else []
        keys = [k for k, e in self.entries.items()
                if dataset is None or e.model is None or self.zoo.entry(e.model).dataset == dataset]
        return inherited + [(self.entries[k].label, k) for k in keys]

    def nbytes(self) -> int:
        """Memory held by this store's own packs (their features dominate)."""
        return sum(sum(v.nbytes for v in e.pack.features.values()) + int(e.pack.predictions.memory_usage().sum())
                   for e in self.entries.values() if e.pack is not None)

    def add_run(self, directory: str | Path) -> str:
        """Register a run directory's (or a pack folder's) results pack; returns its key."""
        directory = Path(str(directory).strip()).expanduser()
        pack = load_pack(directory)
        # A key that names the run without its server path (keys travel to the browser).
        key = f"run {directory.name} {hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:8]}"
        method = pack.header.get("model", {}).get("method", "run")
        with self._lock:
            self.entries[key] = PackEntry(key, f"{method}: {directory.name}", pack, find_pack_dir(directory))
        return key

    def evaluate(self, model_name: str, root: Path, split: str | None = None, report: Report | None = None) -> str:
        """Live re-evaluation: a zoo model on the user's split; the pack joins the list. `report`
        (share done, step) hears its steps (`evaluate_split`)."""
        from mkcnet.inference.evaluate import evaluate_split

        path = find_split(root, split, SPLIT_FILES)
        model = self.zoo.model(model_name)
        with model.lock:
            pack = evaluate_split(model.loaded, path, root, device="cpu", progress=False, cache=self.decoded,
                                  report=report)
        key = f"{model_name} @ {path.name}"
        with self._lock:
            self.entries[key] = PackEntry(key, f"{self.zoo.entry(model_name).title} on your {path.name}", pack, None,
                                          model_name)
            self._embeddings = {k: v for k, v in self._embeddings.items() if k[0] != key}
            self._ood.pop(key, None)
        return key

    def embedding(self, key: str, branch: str, method: str = "tsne", report: Report | None = None) -> pd.DataFrame:
        """`mkcnet.analysis.embedding.embedding_table` for a pack, from the bundled coordinates
        when the pack carries them (instant), else computed once and kept; `report` hears when it
        is computed."""
        from mkcnet.analysis.embedding import NAMES, embedding_table, umap_ready

        if self._owner(key) is not self:
            return self.shared.embedding(key, branch, method, report)
        cache_key = (key, branch, method)
        if cache_key in self._embeddings:
            return self._embeddings[cache_key]
        entry = self.entry(key)
        stored = load_embeddings(entry.directory).get(f"{method}/{branch}") if entry.directory else None
        if stored is not None and len(stored) == len(entry.pack.predictions):
            # The label columns come from the analysis module (PCA is ~ms), the coordinates from the bundle.
            table = embedding_table(entry.pack, branch, "pca").assign(x=stored[:, 0], y=stored[:, 1])
        else:
            if report is not None:
                first = method == "umap" and not umap_ready()  # its imports and compiled code, on first use
                report(0.0, f"{NAMES.get(method, method)} of {len(entry.pack.predictions)} images' {branch} features"
                       + (" (UMAP's first use since the start: loading it)" if first else ""))
            table = embedding_table(entry.pack, branch, method)
        self._embeddings[cache_key] = table
        return table

    def ood_curves(self, key: str) -> pd.DataFrame:
        """`mkcnet.analysis.ood.lq_ratio_curves` for a pack (bundled ones carry them precomputed)."""
        from mkcnet.analysis.ood import lq_ratio_curves

        if self._owner(key) is not self:
            return self.shared.ood_curves(key)
        if key not in self._ood:
            entry = self.entry(key)
            stored = entry.directory / OOD_FILE if entry.directory else None
            if stored is not None and stored.is_file():
                self._ood[key] = pd.read_csv(stored)
            else:
                self._ood[key] = lq_ratio_curves(entry.pack, repeats=OOD_REPEATS)
        return self._ood[key]

    def image(self, key: str, row: int, data_root: Path | None = None) -> np.ndarray | None:
        """The image behind a pack row where it can be had: the data folder, the pack's own
        root, or (synthetic packs) regenerated from its seed. None when it cannot."""
        entry = self.entry(key)
        table = entry.pack.predictions
        if not 0 <= row < len(table):
            raise UserError(f"no image #{row} in this pack (it has {len(table)})")
        rel = str(table["image"].iloc[row])
        roots = [data_root] if data_root is not None else []
        pack_root = entry.pack.header.get("root")
        home = find_project_home()
        if pack_root:
            roots += [Path(pack_root)] + ([home / pack_root] if home is not None else [])
        for root in roots:
            path = root / rel
            if path.resolve().is_relative_to(root.resolve()) and path.is_file():
                return self.images.read(path)
        sources = entry.directory / SYNTH_SOURCES if entry.directory else None
        if sources is not None and sources.is_file():
            return regenerate_synthetic(sources, rel)
        return None
