"""`mkcnet evaluate`, `mkcnet calibrate`, `mkcnet predict` and `mkcnet export`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mkcnet.errors import UserError


def run_evaluate(args: argparse.Namespace) -> int:
    from mkcnet.progress import lines, say

    say(f"mkcnet evaluate: loading {args.checkpoint}…", args.quiet)  # torch and the model: seconds of silence
    from mkcnet.inference.evaluate import evaluate_split

    split = Path(args.split)
    root = Path(args.root) if args.root else None
    if root is not None and not split.is_absolute() and not split.is_file():
        split = root / split
    out = Path(args.out) if args.out else default_pack_dir(Path(args.checkpoint), split)
    pack = evaluate_split(args.checkpoint, split, root, out, device=args.device, progress=not args.quiet,
                          allow_outside_root=args.allow_outside_root, report=lines("mkcnet evaluate", args.quiet))
    m = pack.header["metrics"]
    groups = [("all", ""), ("HQ", "HQ."), ("LQ", "LQ.")]
    print(f"{'':4} {'n':>5} {'AUC':>7} {'ACC':>7} {'F1':>7} {'AUC(hard)':>9}")
    for label, prefix in groups:
        if f"diagnosis.{prefix}acc" in m:
            get = lambda k, prefix=prefix: m.get(f"diagnosis.{prefix}{k}", float("nan"))  # noqa: E731
            n = get("n")
            if not n > 0:  # NaN or 0: say it, rather than print a table row of nan and 0.0000
                print(f"{label:4} {0:5d}   no {label} images in this split" if label != "all" else
                      f"{label:4} {0:5d}   no labelled images in this split")
                continue
            hard = _number(get("auc_hard"), 9)  # binary only: "-" otherwise
            auc = _number(get("auc"), 7)
            print(f"{label:4} {int(n):5d} {auc} {get('acc'):7.4f} {get('f1'):7.4f} {hard}"
                  + ("   (AUC needs every class among these images)" if auc.strip() == "-" else ""))
    if "quality.acc" in m:
        print(f"quality head: AUC {_number(m['quality.auc'], 0)}  ACC {m['quality.acc']:.4f}  F1 {m['quality.f1']:.4f}")
    if not args.quiet:  # --quiet: the metrics and where the pack is, nothing more
        if not pack.header.get("temperatures"):
            print("note: this checkpoint is not calibrated (run `mkcnet calibrate`): both columns are raw softmax")
        print_calibration(pack.header["calibration"])
        print_sets(pack.header.get("prediction_sets"))
    print(f"results pack: {out}")
    return 0


def _number(value: float, width: int) -> str:
    """A metric to 4 places, or "-" where it is undefined (NaN: one class only among the images)."""
    return f"{value:{width}.4f}" if value == value else f"{'-':>{width}}"


def default_pack_dir(checkpoint: Path, split: Path) -> Path:
    """Where `evaluate` writes without --out: inside a training run (its eval-SPLIT/, which the
    workbench and `mkcnet ood` find), else next to the split (the working directory when that
    folder is read-only), named by model and split, so a bundled model's folder stays as shipped."""
    from mkcnet.checkpoint import resolve_checkpoint

    folder = resolve_checkpoint(checkpoint).parent
    if (folder / "history.jsonl").is_file():
        return folder / f"eval-{split.stem}"
    beside = split.resolve().parent
    return (beside if os.access(beside, os.W_OK) else Path.cwd()) / f"eval-{folder.name}-{split.stem}"


def print_calibration(scores: dict[str, float]) -> None:
    """ECE and Brier per head and quality group, before (raw softmax) and after temperature scaling."""
    print(f"{'calibration':16} {'ECE':>7} {'Brier':>7}   {'ECE':>7} {'Brier':>7}   (raw softmax | calibrated)")
    for head in ("diagnosis", "quality"):
        for group in ("", "HQ.", "LQ."):
            raw, cal = (scores.get(f"{head}.{w}.{group}ECE") for w in ("before", "after"))
            if raw is None:
                continue
            label = f"{head} {group[:-1] or 'all'}"
            print(f"{label:16} {raw:7.4f} {scores[f'{head}.before.{group}Brier']:7.4f}   "
                  f"{cal:7.4f} {scores[f'{head}.after.{group}Brier']:7.4f}")


def print_sets(sets: dict | None) -> None:
    """Empirical coverage and mean set size of the diagnosis sets, all / HQ / LQ."""
    if not sets:
        print("prediction sets: none in this checkpoint (fitted before they existed; run `mkcnet calibrate`)")
        return
    print(f"diagnosis sets at {sets['coverage']:.0%} (fitted on {sets.get('split') or 'the validation split'}):")
    print(f"{'':4} {'n':>5} {'coverage':>9} {'mean size':>10} {'one class':>10}")
    for label, prefix in (("all", ""), ("HQ", "HQ."), ("LQ", "LQ.")):
        if f"{prefix}coverage" in sets:
            print(f"{label:4} {int(sets[f'{prefix}n']):5d} {sets[f'{prefix}coverage']:9.3f} {sets[f'{prefix}size']:10.3f} "
                  f"{sets[f'{prefix}single']:10.3f}")


def run_calibrate(args: argparse.Namespace) -> int:
    import contextlib

    from mkcnet.checkpoint import resolve_checkpoint, run_folder
    from mkcnet.inference.evaluate import calibrate_checkpoint
    from mkcnet.run_lock import hold_run

    if not 0.5 <= args.coverage < 1:
        raise UserError(f"--coverage must lie in [0.5, 1), got {args.coverage}")
    run = run_folder(resolve_checkpoint(args.checkpoint))
    # Calibration rewrites the checkpoint: in a run folder, not while its run writes it too.
    with hold_run(run) if run is not None else contextlib.nullcontext():
        model = calibrate_checkpoint(args.checkpoint, args.split, args.train_split, args.root, args.guard,
                                     device=args.device, progress=not args.quiet, coverage=args.coverage,
                                     sets_only=args.sets_only)
    ps = model.prediction_sets
    if args.sets_only:
        print(f"{model.path.name}: prediction sets refitted; temperatures and guard kept")
        print_sets({"coverage": ps.coverage, "split": ps.split, **ps.measured})
        return 0
    c, g = model.calibration, model.guard
    temps = ", ".join(f"{head} T = {t:.3f}" for head, t in c.temperatures.items())
    print(f"{model.path.name}: temperatures fitted on {c.split}: {temps}")
    s = c.scores
    for head in c.temperatures:
        print(f"  {head}: NLL {s[f'{head}.before.NLL']:.4f} → {s[f'{head}.after.NLL']:.4f}, "
              f"ECE {s[f'{head}.before.ECE']:.4f} → {s[f'{head}.after.ECE']:.4f}, "
              f"Brier {s[f'{head}.before.Brier']:.4f} → {s[f'{head}.after.Brier']:.4f}")
    print(f"out-of-distribution guard: {g.method} on the {g.feature} feature, threshold {g.threshold:.3f} "
          f"(conformal: an unseen validation-like image passes with probability ≥ {g.coverage:.0%}); flagged: "
          + ", ".join(f"{name} {share:.1%}" for name, share in g.measured.items()))
    print_sets({"coverage": ps.coverage, "split": ps.split, **ps.measured})
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mkcnet.data.images import parse_window
    from mkcnet.inference.inputs import collect_inputs

    window = parse_window(args.window) if args.window else None
    if args.runtime == "onnxruntime":
        from mkcnet.inference.onnx_runtime import OnnxModel

        if args.robustness:
            raise UserError("--robustness runs the degradation simulator through the network: use the torch runtime")
        model = OnnxModel(args.checkpoint)
        inputs = collect_inputs(args.inputs)
        rows, columns = onnx_rows(model, inputs.files, slice=args.slice, window=window)
    else:
        from mkcnet.progress import lines, say

        try:
            inputs = collect_inputs(args.inputs)
        except UserError:
            inputs = None  # raised below, after the checkpoint's own error if it has one (as ever): one line
        if inputs is not None:
            say(f"mkcnet predict: loading {args.checkpoint}…", args.quiet)  # torch and the model: seconds; stderr
        from mkcnet.checkpoint import load_checkpoint
        from mkcnet.inference.evaluate import predict_images

        loaded = load_checkpoint(args.checkpoint)
        inputs = inputs if inputs is not None else collect_inputs(args.inputs)
        table = predict_images(loaded, inputs.files, device=args.device, slice=args.slice, window=window,
                               robustness=args.robustness, report=lines("mkcnet predict", args.quiet))
        rows, columns = table.to_dict(orient="records"), list(table.columns)
    errors = [row["error"] for row in rows]
    if len(inputs.files) == 1 and not Path(args.inputs[0]).is_dir() and errors[0]:
        raise UserError(errors[0])  # a single unreadable image is an error, not a row
    failed = sum(1 for e in errors if e)
    text = format_rows(rows, columns, args.format, drop_error=failed == 0)
    counts = f"{len(rows) - failed} prediction(s) and {failed} error row(s)"
    if args.output:
        from mkcnet.files import atomic_write

        atomic_write(Path(args.output), lambda p: p.write_text(text if text.endswith("\n") else text + "\n"))
        print(f"wrote {counts} to {args.output}")
    else:
        print(text)
    if failed:
        print(f"warning: {failed} of {len(rows)} file(s) could not be read (see the error column)", file=sys.stderr)
    if inputs.skipped:
        shown = ", ".join(str(p) for p in inputs.skipped[:10]) + (" …" if len(inputs.skipped) > 10 else "")
        print(f"note: skipped {len(inputs.skipped)} file(s) that are not images by their name: {shown}", file=sys.stderr)
    if inputs.not_files:
        shown = ", ".join(str(p) for p in inputs.not_files[:10]) + (" …" if len(inputs.not_files) > 10 else "")
        print(f"note: skipped {len(inputs.not_files)} item(s) that are not regular files (FIFOs, sockets, broken or "
              f"looping links, folders named as images, linked folders): {shown}", file=sys.stderr)
    if failed == len(rows):
        raise UserError("no image could be read")
    return 0


def onnx_rows(model, files: list[Path], slice: int | None = None, window=None) -> tuple[list[dict], list[str]]:
    """The predict rows from an exported model on onnxruntime (imports neither torch nor pandas)."""
    from mkcnet.inference.assessment import table_rows

    assessments = model.predict(files, slice=slice, window=window)
    rows = table_rows(assessments, model.trust.quality_names is not None, model.trust.guard is not None)
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "error")) + ["error"]
    return rows, columns


def _value(value):
    """A row's value as printed: None for NaN, floats to 6 significant digits (the torch path's
    probabilities are float32 rounded to 4 places, which float64 would print as 0.5004000067710876)."""
    if isinstance(value, float):
        return None if value != value else float(f"{value:.6g}")
    return value


def _cell(value) -> str:
    value = _value(value)
    return "" if value is None else str(value)


def format_rows(rows: list[dict], columns: list[str], kind: str, drop_error: bool = False) -> str:
    """The predict rows as csv, json or an aligned table, with the standard library (both runtimes)."""
    if kind == "json":
        return json.dumps([{c: _value(row.get(c)) for c in columns} for row in rows], indent=2)
    if kind == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row.get(c)) for c in columns] for row in rows])
        return buffer.getvalue()
    shown = [c for c in columns if not (drop_error and c == "error")]
    cells = [shown] + [[_cell(row.get(c)) for c in shown] for row in rows]
    widths = [max(len(line[k]) for line in cells) for k in range(len(shown))]
    return "\n".join(" ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in cells)


def run_export(args: argparse.Namespace) -> int:
    from mkcnet.export import export_onnx

    source = Path(args.checkpoint)
    out = Path(args.out) if args.out else (source / "model.onnx" if source.is_dir() else source.with_suffix(".onnx"))
    path = export_onnx(args.checkpoint, out, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}): every head's logits and the guard's "
          f"feature; temperatures, guard, class names and normalisation in its metadata. "
          f"Predict with: mkcnet predict {path} IMAGES --runtime onnxruntime")
    return 0


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "evaluate", help="metrics and a results pack (per-image predictions + features) for a labelled split",
        description="Evaluate a checkpoint on a split file; writes predictions.csv, features.npz and pack.json.")
    e.add_argument("checkpoint", help="run directory (uses best), or a .safetensors checkpoint")
    e.add_argument("split", help="split file (image_path,diagnosis,quality)")
    e.add_argument("--root", help="data-set root (default: the split file's folder)")
    e.add_argument("--out", help="results-pack folder (default: RUN/eval-SPLIT)")
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--allow-outside-root", action="store_true",
                   help="let split rows name files outside the data-set root (trusted local data only)")
    e.set_defaults(func=run_evaluate)

    c = subparsers.add_parser(
        "calibrate", help="fit temperature scaling and the out-of-distribution guard; store them in the checkpoint",
        description="Fit one temperature per head on the validation split (NLL), the out-of-distribution "
                    "guard (reference: training features; threshold: the validation images' conformal 95 % point) "
                    "and the diagnosis prediction sets (split-conformal per predicted quality group). "
                    "`mkcnet train` runs this at the end; rerun it after changing the weights.")
    c.add_argument("checkpoint", help="run directory (uses best), model folder, or a .safetensors checkpoint")
    c.add_argument("--split", help="validation split file (default: the run's)")
    c.add_argument("--train-split", help="training split file (default: the run's)")
    c.add_argument("--root", help="data-set root (default: the run's)")
    c.add_argument("--guard", choices=["mahalanobis", "knn"], default="mahalanobis",
                   help="feature score of the out-of-distribution guard (default: mahalanobis)")
    c.add_argument("--coverage", type=float, default=0.9,
                   help="the diagnosis sets' guaranteed coverage per predicted quality group (default: 0.9)")
    c.add_argument("--sets-only", action="store_true",
                   help="refit the prediction sets alone, keeping the temperatures and the guard")
    c.add_argument("--device", default="auto")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=run_calibrate)

    p = subparsers.add_parser(
        "predict", help="diagnosis and quality probabilities for images",
        description="Predict one image, a folder of images, or a list file (.txt/.csv, first column paths).")
    p.add_argument("checkpoint", help="run directory (uses best), or a .safetensors checkpoint")
    p.add_argument("inputs", nargs="+", help="image files, folders or list files")
    p.add_argument("--slice", type=int, metavar="K",
                   help="the slice of multi-slice files (multi-frame DICOM, NIfTI, TIFF stacks), 0-based "
                        "(default: the middle one)")
    p.add_argument("--window", metavar="C,W",
                   help="the window for DICOM and NIfTI values, centre,width (e.g. -600,1500) or a preset "
                        "(lung, mediastinum, abdomen, bone, brain); default: the model's, else the file's")
    p.add_argument("--robustness", action="store_true",
                   help="a column per degradation family of the model's modality: the lowest severity (1-5) at "
                        "which the diagnosis changes, or 'holds' (about a second per image on a CPU)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--output", "-o", help="write to this file instead of the terminal")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (the predictions alone)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="torch (the checkpoint) or onnxruntime (the model's .onnx from `mkcnet export`: "
                        "a lighter, faster start; same probabilities to 1e-4)")
    p.set_defaults(func=run_predict)

    x = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX, with its calibration and out-of-distribution guard",
        description="Export the Task Net as ONNX (dynamic batch): every head's logits and the guard's feature as "
                    "outputs; temperatures, guard, class names and normalisation in the metadata. "
                    "`mkcnet predict FILE.onnx IMAGES --runtime onnxruntime` then predicts without torch.")
    x.add_argument("checkpoint", help="run directory (uses best), model folder, or a .safetensors checkpoint")
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.add_argument("--out", "-o", help="the .onnx file (default: FOLDER/model.onnx, or the checkpoint's name .onnx)")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or later (default: 18)")
    x.set_defaults(func=run_export)
