"""Evaluate a checkpoint on a labelled split, or predict unlabelled images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.checkpoint import LoadedModel, load_checkpoint
from mkcnet.data.dataset import UNKNOWN, ImageSet, SplitTable, read_split
from mkcnet.data.images import IMAGE_SUFFIXES, load_resized
from mkcnet.device import resolve_device
from mkcnet.errors import UserError
from mkcnet.inference.predict import predict_batches
from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import evaluation_metrics


def evaluate_split(checkpoint: str | Path | LoadedModel, split: str | Path, root: str | Path | None = None,
                   out_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                   progress: bool = True, allow_outside_root: bool = False) -> ResultsPack:
    model = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    mc, dc = model.config.model, model.config.data
    table = read_split(split, root, dc.diagnosis_map, mc.num_diagnosis, mc.num_quality, allow_outside_root)
    data = ImageSet.load(table, mc.in_chans, mc.image_size, mc.mean, mc.std, progress=progress)
    dev = resolve_device(device)
    model.task_net.to(dev)
    preds = predict_batches(model.task_net, data.batches(batch_size), dev, features=True)
    metrics = evaluation_metrics(table.diagnosis, preds.diagnosis, table.quality, preds.quality, mc.num_quality)
    header = {"checkpoint": str(model.path), "split": str(Path(split)), "root": str(table.root),
              "model": model.config.to_dict()["model"], "metrics": metrics}
    pack = ResultsPack.build(table.paths, table.diagnosis, table.quality, preds, header)
    if out_dir is not None:
        pack.save(out_dir)
    return pack


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
            images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += images
            skipped += [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES and not p.name.startswith(".")]
        elif item.suffix.lower() in (".txt", ".csv"):
            if not item.is_file():
                raise UserError(f"list file not found: {item}")
            table = pd.read_csv(item, dtype=str, keep_default_na=False, header=None if item.suffix == ".txt" else 0)
            files += [item.parent / p.strip() for p in table.iloc[:, 0] if p.strip()]
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"input not found: {item}")
    return Inputs(files, skipped)


def predict_images(model: LoadedModel, files: list[Path], device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per file with class names and probabilities; unreadable files get an `error`."""
    mc = model.config.model
    arrays, rows = [], []
    for f in files:
        try:
            arrays.append(load_resized(f, mc.in_chans, mc.image_size))
            rows.append({"image": str(f), "error": ""})
        except UserError as err:
            rows.append({"image": str(f), "error": str(err)})
    table = pd.DataFrame(rows, columns=["image", "error"])
    ok = np.flatnonzero(table["error"] == "")
    if len(ok):
        import torch

        images = torch.from_numpy(np.stack(arrays))
        split = SplitTable(Path("."), [rows[i]["image"] for i in ok], np.full(len(ok), UNKNOWN), np.full(len(ok), UNKNOWN))
        dev = resolve_device(device)
        model.task_net.to(dev)
        preds = predict_batches(model.task_net, ImageSet(split, images, mc.mean, mc.std).batches(batch_size), dev)
        for head, probs, names in (("diagnosis", preds.diagnosis, mc.diagnosis_names),
                                   ("quality", preds.quality, mc.quality_names)):
            if probs is None:
                continue
            names = names or tuple(str(k) for k in range(probs.shape[1]))
            table.loc[ok, head] = [names[k] for k in probs.argmax(1)]
            for k, name in enumerate(names):
                table.loc[ok, f"p_{head}_{name}"] = probs[:, k].round(4)
    return table.drop(columns="error").assign(error=table["error"])


__all__ = ["Inputs", "collect_inputs", "evaluate_split", "predict_images"]
