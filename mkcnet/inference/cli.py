"""`mkcnet evaluate` and `mkcnet predict`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mkcnet.errors import UserError


def run_evaluate(args: argparse.Namespace) -> int:
    from mkcnet.inference.evaluate import evaluate_split

    split = Path(args.split)
    root = Path(args.root) if args.root else None
    if root is not None and not split.is_absolute() and not split.is_file():
        split = root / split
    out = Path(args.out) if args.out else Path(args.checkpoint if Path(args.checkpoint).is_dir() else
                                               Path(args.checkpoint).parent) / f"eval-{split.stem}"
    pack = evaluate_split(args.checkpoint, split, root, out, device=args.device, progress=not args.quiet,
                          allow_outside_root=args.allow_outside_root)
    m = pack.header["metrics"]
    groups = [("all", ""), ("HQ", "HQ."), ("LQ", "LQ.")]
    print(f"{'':4} {'n':>5} {'AUC':>7} {'ACC':>7} {'F1':>7} {'AUC(hard)':>9}")
    for label, prefix in groups:
        if f"diagnosis.{prefix}acc" in m:
            get = lambda k, prefix=prefix: m.get(f"diagnosis.{prefix}{k}", float("nan"))  # noqa: E731
            hard = f"{get('auc_hard'):9.4f}" if f"diagnosis.{prefix}auc_hard" in m else f"{'-':>9}"  # binary only
            print(f"{label:4} {int(get('n')):5d} {get('auc'):7.4f} {get('acc'):7.4f} {get('f1'):7.4f} {hard}")
    if "quality.acc" in m:
        print(f"quality head: AUC {m['quality.auc']:.4f}  ACC {m['quality.acc']:.4f}  F1 {m['quality.f1']:.4f}")
    if not pack.header.get("temperatures"):
        print("note: this checkpoint is not calibrated (run `mkcnet calibrate`): both columns are raw softmax")
    print_calibration(pack.header["calibration"])
    print(f"results pack: {out}")
    return 0


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


def run_calibrate(args: argparse.Namespace) -> int:
    import contextlib

    from mkcnet.checkpoint import resolve_checkpoint
    from mkcnet.inference.evaluate import calibrate_checkpoint
    from mkcnet.run_lock import hold_run

    folder = resolve_checkpoint(args.checkpoint).parent
    # Calibration rewrites the checkpoint: in a run folder, not while its run writes it too.
    with hold_run(folder) if (folder / "config.json").is_file() else contextlib.nullcontext():
        model = calibrate_checkpoint(args.checkpoint, args.split, args.train_split, args.root, args.guard,
                                     device=args.device, progress=not args.quiet)
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
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mkcnet.checkpoint import load_checkpoint
    from mkcnet.inference.evaluate import collect_inputs, predict_images

    model = load_checkpoint(args.checkpoint)
    inputs = collect_inputs(args.inputs)
    table = predict_images(model, inputs.files, device=args.device)
    if len(inputs.files) == 1 and not Path(args.inputs[0]).is_dir() and table["error"].iloc[0]:
        raise UserError(table["error"].iloc[0])  # a single unreadable image is an error, not a row
    failed = int((table["error"] != "").sum())
    if args.format == "csv":
        text = table.to_csv(index=False)
    elif args.format == "json":
        text = json.dumps(table.to_dict(orient="records"), indent=2)
    else:
        text = table.drop(columns="error" if failed == 0 else []).to_string(index=False)
    counts = f"{len(table) - failed} prediction(s) and {failed} error row(s)"
    if args.output:
        from mkcnet.files import atomic_write

        atomic_write(Path(args.output), lambda p: p.write_text(text if text.endswith("\n") else text + "\n"))
        print(f"wrote {counts} to {args.output}")
    else:
        print(text)
    if failed:
        print(f"warning: {failed} of {len(table)} file(s) could not be read (see the error column)", file=sys.stderr)
    if inputs.skipped:
        shown = ", ".join(str(p) for p in inputs.skipped[:10]) + (" …" if len(inputs.skipped) > 10 else "")
        print(f"note: skipped {len(inputs.skipped)} file(s) that are not images by their name: {shown}", file=sys.stderr)
    if inputs.not_files:
        shown = ", ".join(str(p) for p in inputs.not_files[:10]) + (" …" if len(inputs.not_files) > 10 else "")
        print(f"note: skipped {len(inputs.not_files)} item(s) that are not regular files (FIFOs, sockets, broken or "
              f"looping links, folders named as images, linked folders): {shown}", file=sys.stderr)
    if failed == len(table):
        raise UserError("no image could be read")
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
        description="Fit one temperature per head on the validation split (NLL) and the out-of-distribution "
                    "guard (reference: training features; threshold: the validation images' conformal 95 % point). "
                    "`mkcnet train` runs this at the end; rerun it after changing the weights.")
    c.add_argument("checkpoint", help="run directory (uses best), model folder, or a .safetensors checkpoint")
    c.add_argument("--split", help="validation split file (default: the run's)")
    c.add_argument("--train-split", help="training split file (default: the run's)")
    c.add_argument("--root", help="data-set root (default: the run's)")
    c.add_argument("--guard", choices=["mahalanobis", "knn"], default="mahalanobis",
                   help="feature score of the out-of-distribution guard (default: mahalanobis)")
    c.add_argument("--device", default="auto")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=run_calibrate)

    p = subparsers.add_parser(
        "predict", help="diagnosis and quality probabilities for images",
        description="Predict one image, a folder of images, or a list file (.txt/.csv, first column paths).")
    p.add_argument("checkpoint", help="run directory (uses best), or a .safetensors checkpoint")
    p.add_argument("inputs", nargs="+", help="image files, folders or list files")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--output", "-o", help="write to this file instead of the terminal")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_predict)
