"""Evaluate a checkpoint on a labelled split, or predict unlabelled images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.checkpoint import LoadedModel, load_checkpoint, update_trust
from mkcnet.data.dataset import UNKNOWN, ImageSet, SplitTable, read_split
from mkcnet.data.images import IMAGE_SUFFIXES, fit_to_model, read_image
from mkcnet.device import resolve_device
from mkcnet.errors import UserError
from mkcnet.inference.predict import predict_batches
from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import evaluation_metrics
from mkcnet.trust.calibration import calibration_scores, fit_calibration
from mkcnet.trust.guard import fit_guard, input_statistics

# Chosen by measurement (docs/workbench.md, "Out-of-distribution guard"): Mahalanobis on the shared
# backbone's pooled map flags every chest X-ray for the CT model; on the fused feature 84-87 %.
GUARD_METHOD, GUARD_FEATURE = "mahalanobis", "backbone"


def evaluate_split(checkpoint: str | Path | LoadedModel, split: str | Path, root: str | Path | None = None,
                   out_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                   progress: bool = True, allow_outside_root: bool = False) -> ResultsPack:
    model = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    mc, dc = model.config.model, model.config.data
    table = read_split(split, root, dc.diagnosis_map, mc.num_diagnosis, mc.num_quality, allow_outside_root,
                       quality_map=dc.quality_map)
    data = ImageSet.load(table, mc.in_chans, mc.image_size, mc.mean, mc.std, progress=progress)
    dev = resolve_device(device)
    model.task_net.to(dev)
    temperatures = model.calibration.temperatures if model.calibration else None
    preds = predict_batches(model.task_net, data.batches(batch_size), dev, features=True, temperatures=temperatures)
    metrics = evaluation_metrics(table.diagnosis, preds.diagnosis, table.quality, preds.quality, mc.num_quality)
    header = {"checkpoint": str(model.path), "split": str(Path(split)), "root": str(table.root),
              "model": model.config.to_dict()["model"], "metrics": metrics,
              "temperatures": temperatures or {},
              "calibration": calibration_scores(preds.logits, table.diagnosis, table.quality, mc.num_quality,
                                                temperatures or {})}
    pack = ResultsPack.build(table.paths, table.diagnosis, table.quality, preds, header)
    if out_dir is not None:
        pack.save(out_dir)
    return pack


def calibrate_checkpoint(checkpoint: str | Path, split: str | Path | None = None, train_split: str | Path | None = None,
                         root: str | Path | None = None, method: str = GUARD_METHOD, device: str = "auto",
                         progress: bool = True) -> LoadedModel:
    """Fit temperatures on the validation split and the out-of-distribution guard (reference from the
    training split, threshold from the validation split); store both in the checkpoint."""
    model = load_checkpoint(checkpoint)
    mc, dc = model.config.model, model.config.data
    root = Path(root or dc.root)
    split = Path(split) if split else root / (dc.val_split or "val.csv")
    train_split = Path(train_split) if train_split else root / dc.train_split
    dev = resolve_device(device)
    model.task_net.to(dev)
    seen = {}
    for name, path in (("val", split), ("train", train_split)):
        table = read_split(path, root, dc.diagnosis_map, mc.num_diagnosis, mc.num_quality, dc.allow_outside_root,
                           quality_map=dc.quality_map)
        data = ImageSet.load(table, mc.in_chans, mc.image_size, mc.mean, mc.std, progress=progress)
        preds = predict_batches(model.task_net, data.batches(64), dev, extra_features=(GUARD_FEATURE,))
        stats = np.array([input_statistics(read_image(f)) for f in table.files()])
        seen[name] = (table, preds, stats)
    (val, val_preds, _), (train, train_preds, train_stats) = seen["val"], seen["train"]
    calibration = fit_calibration(val_preds.logits, val.diagnosis, val.quality, mc.num_quality, split.name)
    guard = fit_guard(train_preds.features[GUARD_FEATURE], train.diagnosis, val_preds.features[GUARD_FEATURE],
                      train_stats, method, feature=GUARD_FEATURE)
    for name, (_, preds, stats) in seen.items():
        verdicts = guard.verdicts(preds.features[GUARD_FEATURE], [tuple(s) for s in stats])
        guard.measured[name] = float(np.mean([v.ood for v in verdicts]))
    update_trust(model.path, calibration, guard)
    model.calibration, model.guard = calibration, guard
    return model


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
                elif not p.is_dir() or p.is_symlink() or p.suffix.lower() in IMAGE_SUFFIXES:
                    odd.append(p)
            images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += images
            skipped += [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
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
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, header=None if path.suffix == ".txt" else 0)
    except pd.errors.EmptyDataError:
        raise UserError(f"list file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split()).removeprefix("Error tokenizing data. C error: ")
        raise UserError(f"cannot read list file {path}: {reason}") from None
    files = [path.parent / p.strip() for p in table.iloc[:, 0] if p.strip()]
    if not files:
        raise UserError(f"list file {path} names no images")
    return files


def predict_images(model: LoadedModel, files: list[Path], device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per file with class names and probabilities (calibrated where the model is), the
    out-of-distribution verdict (`ood`, `ood_score`, `ood_reason`; empty without a guard), and an
    `error` for unreadable files."""
    mc = model.config.model
    arrays, rows, stats = [], [], []
    for f in files:
        try:
            image = read_image(f)
            arrays.append(fit_to_model(image, mc.in_chans, mc.image_size))
            stats.append(input_statistics(image))
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
        temperatures = model.calibration.temperatures if model.calibration else None
        guarded = (model.guard.feature,) if model.guard is not None else ()
        preds = predict_batches(model.task_net, ImageSet(split, images, mc.mean, mc.std).batches(batch_size), dev,
                                temperatures=temperatures, extra_features=guarded)
        table.loc[ok, "calibrated"] = preds.calibrated
        if model.guard is not None:
            verdicts = model.guard.verdicts(preds.features[model.guard.feature], stats)
            table.loc[ok, "ood"] = [v.ood for v in verdicts]
            table.loc[ok, "ood_score"] = [round(v.score, 3) for v in verdicts]
            table.loc[ok, "ood_reason"] = [v.reason for v in verdicts]
        for head, probs, names in (("diagnosis", preds.diagnosis, mc.diagnosis_names),
                                   ("quality", preds.quality, mc.quality_names)):
            if probs is None:
                continue
            names = names or tuple(str(k) for k in range(probs.shape[1]))
            table.loc[ok, head] = [names[k] for k in probs.argmax(1)]
            for k, name in enumerate(names):
                table.loc[ok, f"p_{head}_{name}"] = probs[:, k].round(4)
    verdict = [c for c in ("calibrated", "ood", "ood_score", "ood_reason") if c in table.columns]
    return table[[c for c in table.columns if c not in verdict and c != "error"] + verdict + ["error"]]


__all__ = ["Inputs", "calibrate_checkpoint", "collect_inputs", "evaluate_split", "predict_images"]
