"""Results packs: per-image predictions (CSV) + per-branch features (npz) + a JSON header.

This is what `mkcnet evaluate` writes and what the workbench and the analysis tools read:
    predictions.csv   image, diagnosis, quality, pred_diagnosis, prob_diagnosis_<k>...,
                      pred_quality, prob_quality_<k>..., correct
    features.npz      one N×D array per branch: diagnosis, quality, auxiliary, fused
    pack.json         model config, split, metrics
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mkcnet.errors import UserError
from mkcnet.files import atomic_write

if TYPE_CHECKING:  # torch and timm (~2-5 s to import on 2 cores): reading a pack needs neither
    from mkcnet.inference.predict import Predictions


@dataclass
class ResultsPack:
    predictions: pd.DataFrame
    features: dict[str, np.ndarray] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, images: list[str], diagnosis: np.ndarray, quality: np.ndarray, preds: Predictions,
              header: dict[str, Any]) -> ResultsPack:
        table = pd.DataFrame({"image": images, "diagnosis": diagnosis, "quality": quality,
                              "pred_diagnosis": preds.diagnosis.argmax(1)})
        for k in range(preds.diagnosis.shape[1]):
            table[f"prob_diagnosis_{k}"] = preds.diagnosis[:, k]
        if preds.quality is not None:
            table["pred_quality"] = preds.quality.argmax(1)
            for k in range(preds.quality.shape[1]):
                table[f"prob_quality_{k}"] = preds.quality[:, k]
        table["correct"] = (table["pred_diagnosis"] == table["diagnosis"]).astype(int)
        return cls(table, preds.features, header)

    def probabilities(self, head: str) -> np.ndarray | None:
        cols = sorted((c for c in self.predictions.columns if c.startswith(f"prob_{head}_")),
                      key=lambda c: int(c.rsplit("_", 1)[1]))
        return self.predictions[cols].to_numpy() if cols else None

    def num_classes(self, head: str) -> int:
        """Class count of "diagnosis" or "quality": from the model config, else from the table."""
        model = self.header.get("model", {})
        if f"num_{head}" in model:
            return int(model[f"num_{head}"])
        probs = self.probabilities(head)
        return probs.shape[1] if probs is not None else int(self.predictions[head].max()) + 1

    def class_names(self, head: str) -> tuple[str, ...]:
        """Class names of "diagnosis" or "quality" (the class indices where the pack has none)."""
        names = tuple(self.header.get("model", {}).get(f"{head}_names") or ())
        return names or tuple(str(k) for k in range(self.num_classes(head)))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "predictions.csv", lambda p: self.predictions.to_csv(p, index=False))
        if self.features:
            def write(p: Path) -> None:
                with open(p, "wb") as f:  # np.savez would add ".npz" to a temporary name
                    np.savez_compressed(f, **{k: v.astype(np.float16) for k, v in self.features.items()})
            atomic_write(directory / "features.npz", write)
        text = json.dumps(self.header, indent=2, default=float)
        atomic_write(directory / "pack.json", lambda p: p.write_text(text))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ResultsPack:
        directory = Path(directory)
        table_file = directory / "predictions.csv"
        if not table_file.is_file():
            raise UserError(f"no results pack in {directory} (predictions.csv missing; run `mkcnet evaluate`)")
        table = pd.read_csv(table_file, keep_default_na=False)
        features = {}
        if (directory / "features.npz").is_file():
            with np.load(directory / "features.npz") as data:
                features = {k: data[k].astype(np.float32) for k in data.files}
        header = json.loads((directory / "pack.json").read_text()) if (directory / "pack.json").is_file() else {}
        return cls(table, features, header)


PACK_DIRS = ("results", "eval-val", "eval-test")  # a bundled model's, then a run's `mkcnet evaluate` packs


def find_pack_dir(directory: Path) -> Path | None:
    """The folder holding a results pack: the directory itself, or results/ or eval-*/ inside."""
    if (directory / "predictions.csv").is_file():
        return directory
    for name in PACK_DIRS:
        if (directory / name / "predictions.csv").is_file():
            return directory / name
    found = sorted(directory.glob("eval-*/predictions.csv"))
    return found[0].parent if found else None


def load_pack(directory: str | Path) -> ResultsPack:
    """A results pack from a pack folder, a bundled model folder or a run directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"folder not found: {directory.name}")
    found = find_pack_dir(directory)
    if found is None:
        raise UserError(f"no results pack in {directory.name}: run `mkcnet evaluate RUN SPLIT` first")
    return ResultsPack.load(found)
