"""The model zoo: every page's one way to find, load and cache models and their results packs.

A zoo entry is a folder holding a checkpoint and, optionally, a results pack:

    checkpoints/<name>/model.safetensors, config.json  fp16 Task Net and its JSON (scripts/bundle_models.py)
    checkpoints/<name>/README.md                        the model card: hub metadata (YAML) over Markdown
    checkpoints/<name>/results/                         predictions.csv, features.npz, pack.json,
                                                        embeddings.npz (precomputed 2-D coordinates)

The first three are Hugging Face's layout (`mkcnet.load` reads the folder through
`Model.from_pretrained`); a folder saved before it (model.json, MODEL.md) still loads.

A training run directory works too (best.safetensors, and its `mkcnet evaluate` pack in
eval-val/), so `MKCNET_CHECKPOINTS=runs/ct-iqad` shows a user's own runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mkcnet.checkpoint import LoadedModel, find_checkpoint, load_checkpoint, read_header
from mkcnet.config import ModelConfig, RunConfig
from mkcnet.errors import UserError
from mkcnet.hub import folder_card
from mkcnet.inference.results import ResultsPack, find_pack_dir, load_pack
from mkcnet.methods import METHODS
from mkcnet.presets import MODALITY_OF_PRESET, model_modality  # noqa: F401  (the map: scripts/bundle_models.py)
from mkcnet.project import find_project_home
from mkcnet.workbench.examples import LabelNames
from mkcnet.workbench.settings import WorkbenchSettings


def default_roots(settings: WorkbenchSettings | None = None) -> list[Path]:
    """The settings' checkpoint folders (--checkpoints, MKCNET_CHECKPOINTS), else the project's checkpoints/."""
    settings = settings if settings is not None else WorkbenchSettings.read()
    if settings.checkpoints:
        return list(settings.checkpoints)
    home = find_project_home()
    return [home / "checkpoints"] if home is not None else []


@dataclass
class ZooEntry:
    """One model on disk; nothing is loaded until asked for."""

    name: str
    directory: Path
    weights: Path

    @cached_property
    def header(self) -> dict[str, Any]:
        return read_header(self.weights)

    @property
    def card(self) -> dict[str, Any]:
        """The model card fields (bundled models) or what a training run recorded."""
        return self.header.get("info", {})

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.header["config"])

    @property
    def model_config(self) -> ModelConfig:
        return self.config.model

    @property
    def method(self) -> str:
        return self.model_config.method

    @property
    def dataset(self) -> str:
        return self.card.get("dataset") or self.config.data.preset

    @property
    def modality(self) -> str:
        return model_modality(self.config, self.card)

    @property
    def rank(self) -> int:
        return int(self.card.get("rank", 100))

    @property
    def title(self) -> str:
        return self.card.get("title") or f"{self.method} ({self.dataset})"

    @property
    def label_names(self) -> LabelNames:
        """The model's class names, for the captions of a data set's images (read from the
        checkpoint's header: nothing is loaded)."""
        return LabelNames.of(self.model_config)

    @property
    def pack_dir(self) -> Path | None:
        return find_pack_dir(self.directory)

    def card_markdown(self) -> str:
        """The model card a person reads: the folder's README.md without its hub metadata (MODEL.md
        in a folder saved before the hub layout), else one line naming the model."""
        card = folder_card(self.directory)
        return card if card is not None else f"**{self.title}** — `{self.weights.name}`"


@dataclass
class ZooModel:
    """A loaded Task Net with what the pages need to feed it and to name its outputs.

    `lock` serialises CAM computations: they hook the shared network's layers, and two
    concurrent requests would otherwise read each other's activations."""

    entry: ZooEntry
    loaded: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def task_net(self):
        return self.loaded.task_net

    @property
    def config(self) -> ModelConfig:
        return self.loaded.config.model

    def class_names(self, head: str) -> tuple[str, ...]:
        c = self.config
        names, count = {"diagnosis": (c.diagnosis_names, c.num_diagnosis),
                        "quality": (c.quality_names, c.num_quality)}[head]
        return tuple(names) if len(names) == count else tuple(str(k) for k in range(count))


class ModelZoo:
    """Discovers models under the roots once; loads models, packs and embeddings on demand and
    keeps them (a handful of ~8 MB models)."""

    def __init__(self, roots: list[Path] | None = None):
        self.roots = [Path(r) for r in (roots if roots is not None else default_roots())]
        self.entries: dict[str, ZooEntry] = {}
        for root in self.roots:
            for directory in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
                weights = find_checkpoint(directory)
                if weights is not None:
                    self.entries.setdefault(directory.name, ZooEntry(directory.name, directory, weights))
        # Bundled models carry a rank (their order in scripts/bundle_models.py); the first is the default.
        self.entries = dict(sorted(self.entries.items(), key=lambda item: (item[1].rank, item[0])))
        self._models: dict[str, ZooModel] = {}
        self._packs: dict[str, ResultsPack] = {}
        self._lock = threading.Lock()

    def names(self, dataset: str | None = None, method: str | None = None) -> list[str]:
        """Model names, by data set and method; a variant that stands for the method (e.g. the
        bundled `vanilla-gab` for `vanilla`) comes after the method's own models."""
        def rank(entry: ZooEntry) -> int | None:
            if method is None or entry.method == method:
                return 0
            return 1 if METHODS.get(entry.method) and METHODS[entry.method].stands_for == method else None

        found = [(rank(e), n) for n, e in self.entries.items() if dataset is None or e.dataset == dataset]
        return [n for _, n in sorted(((r, n) for r, n in found if r is not None), key=lambda item: item[0])]

    def datasets(self) -> list[str]:
        """Data sets in the order of their first model (so the default model's comes first)."""
        return list(dict.fromkeys(e.dataset for e in self.entries.values()))

    def choices(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """(label, name) pairs for a dropdown."""
        return [(self.entries[n].title, n) for n in (names if names is not None else self.names())]

    def entry(self, name: str) -> ZooEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries) or "none (see docs/workbench.md)"
            raise UserError(f"unknown model {str(name)[:80]!r}; available: {known}") from None

    def model(self, name: str) -> ZooModel:
        with self._lock:
            if name not in self._models:
                entry = self.entry(name)
                self._models[name] = ZooModel(entry, load_checkpoint(entry.weights))
            return self._models[name]

    def loaded(self) -> list[str]:
        """The models loaded so far."""
        return list(self._models)

    def pack(self, name: str) -> ResultsPack:
        with self._lock:
            if name not in self._packs:
                self._packs[name] = load_pack(self.entry(name).directory)
            return self._packs[name]

