"""Evaluate a checkpoint on a labelled split, or predict unlabelled images."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mkcnet.checkpoint import LoadedModel, load_checkpoint, update_trust
from mkcnet.data.dataset import UNKNOWN, ImageSet, SplitTable, read_split
from mkcnet.data.images import Window, fit_to_model, model_window, read_image
from mkcnet.device import resolve_device
from mkcnet.errors import UserError
from mkcnet.inference.inputs import Inputs, collect_inputs  # they lived here; re-exported (__all__)
from mkcnet.inference.predict import predict_batches
from mkcnet.inference.results import ResultsPack
from mkcnet.progress import Report
from mkcnet.trust.calibration import Calibration, calibration_scores, fit_calibration
from mkcnet.trust.conformal import COVERAGE, PredictionSets, fit_prediction_sets, set_metrics
from mkcnet.trust.guard import fit_guard, input_statistics

# Chosen by measurement (docs/workbench.md, "Out-of-distribution guard"): Mahalanobis on the shared
# backbone's pooled map flags every chest X-ray for the CT model; on the fused feature 84-87 %.
GUARD_METHOD, GUARD_FEATURE = "mahalanobis", "backbone"


def evaluate_split(checkpoint: str | Path | LoadedModel, split: str | Path, root: str | Path | None = None,
                   out_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                   progress: bool = True, allow_outside_root: bool = False, cache: bool | Path = True,
                   report: Report | None = None) -> ResultsPack:
    """`report` (share done, step) hears each step: reading the split, decoding (image by image),
    the network (batch by batch), the metrics."""
    from mkcnet.metrics import evaluation_metrics  # scikit-learn: `mkcnet predict` does not need it

    report = report or _silent
    model = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    mc, dc = model.config.model, model.config.data
    report(0.0, f"reading the split {Path(split).name}")
    table = read_split(split, root, dc.diagnosis_map, mc.num_diagnosis, mc.num_quality, allow_outside_root,
                       quality_map=dc.quality_map)
    n = len(table)
    check_fit(model, table.files())
    decoding = f"decoding {n} images"
    report(0.02, decoding)
    data = ImageSet.load(table, mc.input, progress=progress, cache=cache,
                         done=lambda k, total: report(0.02 + 0.58 * k / total, decoding))
    dev = resolve_device(device)
    model.task_net.to(dev)
    temperatures = model.calibration.temperatures if model.calibration else None
    network = f"running the network on {n} images"
    report(0.6, network)
    batches = _counted(data.batches(batch_size), -(-n // batch_size),
                       lambda k, total: report(0.6 + 0.3 * k / total, network))
    preds = predict_batches(model.task_net, batches, dev, features=True, temperatures=temperatures)
    report(0.9, "metrics and calibration")
    metrics = evaluation_metrics(table.diagnosis, preds.diagnosis, table.quality, preds.quality, mc.num_quality)
    header = {"checkpoint": str(model.path), "split": str(Path(split)), "root": str(table.root),
              "model": model.config.to_dict()["model"], "metrics": metrics,
              "temperatures": temperatures or {},
              "calibration": calibration_scores(preds.logits, table.diagnosis, table.quality, mc.num_quality,
                                                temperatures or {})}
    if model.prediction_sets is not None:
        member = model.prediction_sets.sets(preds.diagnosis, predicted_quality(preds.logits))
        header["prediction_sets"] = {"coverage": model.prediction_sets.coverage, "split": model.prediction_sets.split,
                                     **set_metrics(member, table.diagnosis, table.quality, mc.num_quality)}
    pack = ResultsPack.build(table.paths, table.diagnosis, table.quality, preds, header)
    if out_dir is not None:
        pack.save(out_dir)
    return pack


def _silent(share: float, what: str) -> None:
    pass


def _counted(items: Iterable, total: int, done: Callable[[int, int], None]) -> Iterator:
    """`items`, calling `done(k, total)` after each k-th is used."""
    for k, item in enumerate(items, 1):
        yield item
        done(k, total)


def check_fit(model: LoadedModel, files: list[Path], sample: int = 16) -> None:
    """Refuse, in one line, images that do not fit the model: when most of a spread sample fails
    its input checks the same way (colour images for a greyscale model, or the reverse)."""
    if model.guard is None or not files:
        return
    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(sample, len(files))).round().astype(int)]
    problems = [model.guard.inputs.problem(*input_statistics(read_image(f))) for f in picked]
    common = max(set(problems), key=problems.count)
    if common.startswith(("it is a colour image", "it is a greyscale image")) and problems.count(common) > len(picked) / 2:
        name = model.path.parent.name if model.path is not None else "the model"
        raise UserError(f"these images do not fit {name}: {problems.count(common)} of the {len(picked)} checked say "
                        f"{common.removeprefix('it is ')}; choose a model trained on images like them")


def predicted_quality(logits: dict[str, np.ndarray]) -> np.ndarray | None:
    """The quality head's class per image (the prediction sets' group); None without a quality head."""
    return None if logits.get("quality") is None else logits["quality"].argmax(1)


def sets_from(calibration: Calibration | None, logits: dict[str, np.ndarray], diagnosis: np.ndarray,
              quality: np.ndarray, num_quality: int, coverage: float, split: str) -> PredictionSets:
    """Prediction sets fitted on a labelled split's calibrated probabilities, with what they give there."""
    probs = (calibration or Calibration({})).probabilities("diagnosis", logits["diagnosis"])  # T = 1 if uncalibrated
    sets = fit_prediction_sets(probs, diagnosis, predicted_quality(logits), coverage, split)
    sets.measured = set_metrics(sets.sets(probs, predicted_quality(logits)), diagnosis, quality, num_quality)
    return sets


def calibrate_checkpoint(checkpoint: str | Path, split: str | Path | None = None, train_split: str | Path | None = None,
                         root: str | Path | None = None, method: str = GUARD_METHOD, device: str = "auto",
                         progress: bool = True, coverage: float = COVERAGE, sets_only: bool = False) -> LoadedModel:
    """Fit temperatures on the validation split, the out-of-distribution guard (reference from the
    training split, threshold from the validation split) and the prediction sets (Mondrian
    split-conformal on the validation split's calibrated probabilities); store them in the checkpoint.
    `sets_only` refits the sets alone (at another `coverage`, or for a checkpoint calibrated before
    sets existed), keeping its temperatures and guard and reading no training split.

        calibrate_checkpoint("checkpoints/ct-iqad-mkcnet", "../shared/data/ct-iqad/val.csv", sets_only=True)
    """
    model = load_checkpoint(checkpoint)
    mc, dc = model.config.model, model.config.data
    root = Path(root or dc.root)
    split = Path(split) if split else root / (dc.val_split or "val.csv")
    train_split = Path(train_split) if train_split else root / dc.train_split
    dev = resolve_device(device)
    model.task_net.to(dev)
    seen = {}
    for name, path in (("val", split),) if sets_only else (("val", split), ("train", train_split)):
        table = read_split(path, root, dc.diagnosis_map, mc.num_diagnosis, mc.num_quality, dc.allow_outside_root,
                           quality_map=dc.quality_map)
        data = ImageSet.load(table, mc.input, progress=progress)
        preds = predict_batches(model.task_net, data.batches(64), dev, extra_features=(GUARD_FEATURE,))
        stats = None if sets_only else np.array([input_statistics(read_image(f)) for f in table.files()])
        seen[name] = (table, preds, stats)
    val, val_preds, _ = seen["val"]
    if sets_only:
        model.prediction_sets = sets_from(model.calibration, val_preds.logits, val.diagnosis, val.quality,
                                          mc.num_quality, coverage, split.name)
        update_trust(model.path, model.calibration, model.guard, prediction_sets=model.prediction_sets)
        return model
    train, train_preds, train_stats = seen["train"]
    calibration = fit_calibration(val_preds.logits, val.diagnosis, val.quality, mc.num_quality, split.name)
    guard = fit_guard(train_preds.features[GUARD_FEATURE], train.diagnosis, val_preds.features[GUARD_FEATURE],
                      train_stats, method, feature=GUARD_FEATURE)
    for name, (_, preds, stats) in seen.items():
        verdicts = guard.verdicts(preds.features[GUARD_FEATURE], [tuple(s) for s in stats])
        guard.measured[name] = float(np.mean([v.ood for v in verdicts]))
    sets = sets_from(calibration, val_preds.logits, val.diagnosis, val.quality, mc.num_quality, coverage, split.name)
    update_trust(model.path, calibration, guard, prediction_sets=sets)
    model.calibration, model.guard, model.prediction_sets = calibration, guard, sets
    return model


SET_SEPARATOR = "|"  # between the class names of a `diagnosis_set`


def predict_images(model: LoadedModel, files: list[Path], device: str = "auto", batch_size: int = 32,
                   slice: int | None = None, window: Window | None = None, robustness: bool = False,
                   report: Report | None = None) -> pd.DataFrame:
    """One row per file with class names and probabilities (calibrated where the model is), the
    diagnosis set at the checkpoint's coverage (`diagnosis_set`, class names joined by "|"; absent
    for a checkpoint without prediction sets), the out-of-distribution verdict (`ood`, `ood_score`,
    `ood_reason`; empty without a guard), and an `error` for unreadable files. `slice` picks the
    slice of multi-slice files (default: the middle one); `window` renders DICOM and NIfTI (default:
    the model's own window, else the file's). With `robustness`, a column per degradation family of
    the model's modality: the lowest severity at which the diagnosis changes, or "holds"
    (`mkcnet.inference.robustness`; one batched forward of 76 images per file for CT). `report`
    (share done, step) hears each step: reading, the network, the robustness search (image by image)."""
    report = report or _silent
    mc = model.config.model
    window = window or model_window(mc.input)
    arrays, rows, stats, decoded = [], [], [], []
    reading = f"reading {len(files)} image(s)"
    parts = 2 if robustness else 1  # the robustness search takes about as long again as the rest
    for k, f in enumerate(files):
        report(0.4 * k / len(files) / parts, reading)
        try:
            image = read_image(f, slice=slice, window=window)
            if robustness:
                decoded.append(image)
            arrays.append(fit_to_model(image, mc.input))
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
        network = f"running the network on {len(ok)} image(s)"
        report(0.4 / parts, network)
        batches = _counted(ImageSet(split, images, mc.input).batches(batch_size), -(-len(ok) // batch_size),
                           lambda k, total: report((0.4 + 0.6 * k / total) / parts, network))
        preds = predict_batches(model.task_net, batches, dev, temperatures=temperatures, extra_features=guarded)
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
        if model.prediction_sets is not None:
            names = mc.diagnosis_names or tuple(str(k) for k in range(preds.diagnosis.shape[1]))
            member = model.prediction_sets.sets(preds.diagnosis, predicted_quality(preds.logits))
            table.loc[ok, "diagnosis_set"] = [SET_SEPARATOR.join(n for n, m in zip(names, row) if m) for row in member]
        if robustness:
            from mkcnet.inference.robustness import robustness_margin

            margins = []
            for k, image in enumerate(decoded):
                report(0.5 + 0.5 * k / len(decoded), f"robustness: image {k + 1} of {len(decoded)}")
                margins.append(robustness_margin(model, image).columns())
            for column in margins[0]:
                table.loc[ok, column] = [str(m[column]) for m in margins]
    verdict = [c for c in ("calibrated", "ood", "ood_score", "ood_reason") if c in table.columns]
    return table[[c for c in table.columns if c not in verdict and c != "error"] + verdict + ["error"]]


__all__ = ["Inputs", "calibrate_checkpoint", "collect_inputs", "evaluate_split", "predict_images"]
