"""`mkcnet bench`, `mkcnet ood`, `mkcnet embed`, `mkcnet grads` and `mkcnet cam`.

Heavy imports (torch, plotly, scikit-learn) happen inside the commands: every `mkcnet`
command builds this parser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mkcnet.errors import UserError


# -- naming runs and packs on the command line ---------------------------------------------------
def resolve_pack(path: Path) -> Path:
    """A results pack folder, or a run directory holding exactly one (eval-*)."""
    if (path / "predictions.csv").is_file():
        return path
    packs = sorted(p for p in path.glob("eval-*") if (p / "predictions.csv").is_file())
    if len(packs) != 1:
        raise UserError(f"{path}: not a results pack, and {'no' if not packs else 'more than one'} eval-* pack in it")
    return packs[0]


def short_names(paths: list[Path]) -> list[str]:
    """The parts of the paths that differ, without a trailing eval-* folder (…/mkcnet/seed0)."""
    parts = [list(path.resolve().parts) for path in paths]
    parts = [ps[:-1] if ps[-1].startswith("eval-") else ps for ps in parts]
    common = 0
    while len(paths) > 1 and all(len(ps) > common + 1 and ps[common] == parts[0][common] for ps in parts):
        common += 1
    return ["/".join(ps[common:]) if len(paths) > 1 else ps[-1] for ps in parts]


def named(items: list[str], by: str, method_of) -> list[tuple[str, Path]]:
    """`NAME=PATH` or `PATH` items → (name, path); without a NAME, the path's distinct parts, or
    with `--by method` the run's method, so the seeds of one method pool into one curve."""
    pairs = [item.split("=", 1) if "=" in item else [None, item] for item in items]
    paths = [Path(p) for _, p in pairs]
    for path in paths:
        if not path.exists():
            raise UserError(f"not found: {path}")
    defaults = [method_of(p) for p in paths] if by == "method" else short_names(paths)
    return [(name or default, path) for (name, _), path, default in zip(pairs, paths, defaults)]


def _config(path: Path) -> dict:
    config = path / "config.json"
    raw = json.loads(config.read_text()) if config.is_file() else None
    if raw is None or "format" in raw:  # none, or a model folder's (a checkpoint's JSON, not a RunConfig)
        raise UserError(f"{path}: no run's config.json (not a run directory)")
    return raw


# -- commands ------------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace) -> int:
    from mkcnet.analysis.bench import Bench, Budget, DatasetSpec, collect, parse_shard, parse_splits, write_tables
    from mkcnet.analysis.figures import save_figure
    from mkcnet.analysis.grads import gradient_history, grads_figure
    from mkcnet.device import resolve_device
    from mkcnet.methods import METHODS

    out = Path(args.out)
    if args.collect:
        splits = [s for s in args.split or [] if "=" not in s]
        runs, by_dataset = collect([Path(f) for f in args.collect], splits[-1] if splits else None)
        methods = [m for m in METHODS if m in set(runs["method"])]
        title = (f"# Benchmark: {', '.join(methods)} on {', '.join(dict.fromkeys(runs['dataset']))}\n\n"
                 f"Collected from {len(args.collect)} folder(s): {len(runs)} finished run(s); diagnosis metrics of "
                 "each run's results pack, best-validation checkpoint, mean ± std over seeds.")
    else:
        if not args.data:
            raise UserError("--data NAME=ROOT is required (or --collect FOLDERS to merge finished shards)")
        devices = [d.strip() for d in (args.devices or "").split(",") if d.strip()]
        for device in devices:
            try:
                resolve_device(device)
            except ValueError as err:
                raise UserError(f"--devices: {err}") from None
        shard = parse_shard(args.shard) if args.shard else (1, 1)
        budget = Budget(args.preset, args.epochs, args.image_size, args.batch_size, args.train_lq_ratio, args.device)
        datasets, split = parse_splits([DatasetSpec.parse(d) for d in args.data], args.split or [])
        bench = Bench(datasets, args.methods, args.seeds, out, budget, split, shard=shard, devices=devices)
        if not bench.share():
            print(f"shard {shard[0]}/{shard[1]} holds none of the grid's {len(bench.runs())} run(s); nothing to do")
            return 0
        runs = bench.run(dry_run=args.dry_run)
        if args.dry_run:
            return 0
        methods, by_dataset = args.methods, {}
        for run in bench.share():
            by_dataset.setdefault(run.dataset.name, []).append((run.method, run.run_dir))
        part = f" (shard {shard[0]}/{shard[1]}: {len(runs)} of the grid's {len(bench.runs())} runs)" if shard[1] > 1 else ""
        title = (f"# Benchmark: {', '.join(args.methods)} on {', '.join(d.name for d in bench.datasets)}{part}\n\n"
                 f"Diagnosis metrics on the {bench.describe_splits()}, best-validation checkpoint, mean ± std over "
                 f"seeds {', '.join(map(str, args.seeds))}. Budget: preset `{args.preset}`"
                 + "".join(f", {k} {v}" for k, v in (("epochs", args.epochs), ("image size", args.image_size),
                                                      ("batch", args.batch_size),
                                                      ("train LQ ratio", args.train_lq_ratio)) if v is not None) + ".")
    out.mkdir(parents=True, exist_ok=True)
    written = write_tables(runs, out, methods, title)
    for dataset, pairs in by_dataset.items():
        history = gradient_history(pairs)
        if len(history):
            written += save_figure(grads_figure(history, f"Task-gradient cosine, {dataset} (mean over seeds)"),
                                   out / f"grads-{dataset}", png=not args.no_png)
    print((out / "table.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_ood(args: argparse.Namespace) -> int:
    from mkcnet.analysis.figures import png_renderer
    from mkcnet.progress import say

    if not (0 < args.epsilon < 1 and 0 < args.delta < 1):
        raise UserError(f"--epsilon and --delta must lie in (0, 1), got {args.epsilon} and {args.delta}")
    say(f"mkcnet ood: reading {len(args.packs)} results pack(s)…", args.quiet)
    # The browser that renders the PNGs starts now, beside the work (one for every figure).
    with png_renderer(not args.no_png):
        return _ood(args)


def _ood(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from mkcnet.analysis.figures import save_figure
    from mkcnet.analysis.ood import METRICS, lq_ratio_draws, ood_figure, summarise
    from mkcnet.analysis.referral import describe_point, operating_points, referral_curves, referral_figure
    from mkcnet.inference.results import ResultsPack
    from mkcnet.progress import bar

    loaded: dict[Path, ResultsPack] = {}

    def load(path: Path) -> ResultsPack:  # each pack read once, however many steps use it
        folder = resolve_pack(path)
        if folder not in loaded:
            loaded[folder] = ResultsPack.load(folder)
        return loaded[folder]

    packs = named(args.packs, args.by, lambda p: load(p).header["model"]["method"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    steps = bar(total=(0 if args.referral else len(packs)) + len(dict(packs)) + 1, desc="mkcnet ood", unit="step",
                quiet=args.quiet)
    if not args.referral:
        ratios = np.linspace(0, 1, args.ratios)
        draws: dict[str, list[pd.DataFrame]] = {}
        for name, path in packs:
            steps.set_postfix_str(f"LQ-ratio draws: {name}")
            draws.setdefault(name, []).append(lq_ratio_draws(load(path), ratios, args.size, args.repeats, args.seed,
                                                             replace=args.bootstrap))
            steps.update()
        curves = {name: summarise(pd.concat(parts)) for name, parts in draws.items()}
        pd.concat([c.assign(run=name) for name, c in curves.items()]).to_csv(out / "ood_curves.csv", index=False)
        written.append(out / "ood_curves.csv")
        steps.set_postfix_str("figures")
        for metric in METRICS if args.metric == "all" else [args.metric]:
            written += save_figure(ood_figure(curves, metric), out / f"ood_{metric}", png=not args.no_png)
        sizes = {name: sorted({d.attrs["size"] for d in parts}) for name, parts in draws.items()}
        replaced = [name for name, parts in draws.items() if any(d.attrs["replaced"] for d in parts)]
        for name, c in curves.items():
            auc = c[c.metric == "auc"].set_index("ratio")["mean"]
            steps.write(f"{name:32} size {sizes[name]}  AUC at r=0 {auc.iloc[0]:.4f}  r=1 {auc.iloc[-1]:.4f}")
        if replaced and not args.bootstrap:
            steps.write(f"note: drawn with replacement where a quality group was too small: {', '.join(replaced)}")
    # Quality-aware referral: the first pack of each name (a run's packs share one model).
    referral, points = {}, {}
    for name, path in packs:
        if name not in referral:
            steps.set_postfix_str(f"referral: {name}")
            pack = load(path)
            referral[name] = referral_curves(pack)
            points[name] = operating_points(pack, args.epsilon, args.delta)
            steps.update()
    pd.concat([c.assign(run=name) for name, c in referral.items()]).to_csv(out / "referral_curves.csv", index=False)
    pd.concat([c.assign(run=name) for name, c in points.items()]).to_csv(out / "referral_points.csv", index=False)
    written += [out / "referral_curves.csv", out / "referral_points.csv"]
    steps.set_postfix_str("figures")
    written += save_figure(referral_figure(referral, points), out / "referral", png=not args.no_png)
    steps.update()
    steps.close()
    for name, c in referral.items():
        aurc = c.groupby("rule", sort=False)["aurc"].first()
        print(f"{name:32} referral AURC: " + ", ".join(f"by {rule} {v:.4f}" for rule, v in aurc.items()))
        for _, row in points[name].iterrows():
            print(f"{'':32} {describe_point(row)}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from mkcnet.analysis.figures import png_renderer

    with png_renderer(not args.no_png):  # one browser for every branch's PNG, started beside the work
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    from mkcnet.analysis.embedding import class_names, embedding_figure, embedding_table, separation_scores
    from mkcnet.analysis.figures import save_figure
    from mkcnet.inference.results import ResultsPack

    pack = ResultsPack.load(resolve_pack(Path(args.pack)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores = separation_scores(pack)
    scores.to_csv(out / "separation.csv", index=False)
    written = [out / "separation.csv"]
    for branch in args.branches or list(pack.features):
        table = embedding_table(pack, branch, args.method, args.seed)
        stem = out / f"embedding_{branch}_{args.method}"
        table.to_csv(stem.with_suffix(".csv"), index=False)
        fig = embedding_figure(table, args.color, class_names(pack))
        fig.update_layout(title=f"{branch} features, {args.method}, coloured by {args.color}")
        written += [stem.with_suffix(".csv"), *save_figure(fig, stem, png=not args.no_png)]
    print(scores.to_string(index=False, float_format="%.4f"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_grads(args: argparse.Namespace) -> int:
    from mkcnet.analysis.figures import save_figure
    from mkcnet.analysis.grads import gradient_history, grads_figure

    runs = named(args.runs, args.by, lambda p: _config(p)["model"]["method"])
    table = gradient_history(runs)
    if table.empty:
        raise UserError("no grad_cos.* values in these runs' history.jsonl (vanilla has one loss only; "
                        "runs trained before the probe existed have none)")
    out = Path(args.out).with_suffix("")
    table.to_csv(out.with_suffix(".csv"), index=False)
    written = [out.with_suffix(".csv"), *save_figure(grads_figure(table), out, png=not args.no_png)]
    print(table.groupby(["run", "pair"])["cosine"].agg(["first", "last", "mean"]).to_string(float_format="%.3f"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_cam(args: argparse.Namespace) -> int:
    from mkcnet.progress import lines, say

    say(f"mkcnet cam: loading {args.checkpoint}…", args.quiet)  # torch, pytorch-grad-cam and the model
    from mkcnet.analysis.cam import save_cams
    from mkcnet.inference.evaluate import collect_inputs

    inputs = collect_inputs(args.images)
    result = save_cams(args.checkpoint, inputs.files, args.out, args.method, args.opacity, args.device, args.batch_size,
                       report=lines("mkcnet cam", args.quiet))
    for path in inputs.skipped:
        print(f"note: skipped {path.name}: not an image by its name", file=sys.stderr)
    for path in inputs.not_files:
        print(f"note: skipped {path.name}: not a regular file (a FIFO, a socket, a broken or looping link, a folder)",
              file=sys.stderr)
    for name, why in result.errors:
        print(f"warning: skipped {name}: {why}", file=sys.stderr)
    if not result.written:
        raise UserError("no image could be read")
    images = len({row["image"] for row in result.written})
    print(f"wrote {len(result.written)} maps ({images} images × {len(result.written) // images} targets, PNG + npy) "
          f"to {args.out}; index: {Path(args.out) / 'cams.csv'}")
    return 0


def add_output(p: argparse.ArgumentParser, out_help: str, pools: str | None = None) -> None:
    """--out and --no-png; with `pools`, also --by (how inputs without a NAME= are named)."""
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--no-png", action="store_true", help="HTML figures only")
    if pools:
        p.add_argument("--by", choices=["path", "method"], default="path",
                       help=f"default names: distinct path parts, or the run's method ({pools} its seeds)")


def register(subparsers) -> None:
    from mkcnet.methods import METHODS, TABLE2
    from mkcnet.presets import DATASETS, TRAINING

    fmt = argparse.ArgumentDefaultsHelpFormatter
    b = subparsers.add_parser(
        "bench", formatter_class=fmt, help="train and evaluate methods × data sets × seeds; the paper's Table 2",
        description="Train and evaluate every (data set, method, seed) under one budget, then write the Table 2 "
                    "layout (AUC/ACC/F1 per data set and averaged, mean ± std over seeds; also on HQ and LQ "
                    "images only) as CSV and Markdown. Finished runs are skipped and interrupted ones resume.")
    b.add_argument("--data", action="append", metavar="NAME=ROOT",
                   help=f"a data set: preset ({', '.join(DATASETS)}) or a .json data-set config, = its root; repeat")
    b.add_argument("--methods", nargs="+", default=list(TABLE2), choices=list(METHODS), metavar="METHOD",
                   help=f"methods, from: {', '.join(METHODS)}")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--split", action="append", metavar="[NAME=]SPLIT",
                   help="evaluation split: a name (ROOT/NAME.csv) or a file in ROOT; NAME=SPLIT for one data set; "
                        "repeat (default: test)")
    add_output(b, "output folder (runs, tables, figures)")
    b.add_argument("--preset", default="cpu", choices=list(TRAINING), help="training preset (the budget)")
    b.add_argument("--epochs", type=int, help="override the preset's epochs")
    b.add_argument("--image-size", type=int, help="override the preset's image size")
    b.add_argument("--batch-size", type=int, help="override the preset's batch size")
    b.add_argument("--train-lq-ratio", type=float, metavar="R", help="train on a subsample with this LQ share")
    b.add_argument("--device", default="auto")
    b.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    g = b.add_argument_group("many devices and machines (docs/distributed.md)")
    g.add_argument("--devices", metavar="LIST",
                   help="train one run per device at a time, e.g. cuda:0,cuda:1,cuda:2 (or cpu,cpu)")
    g.add_argument("--shard", metavar="i/n",
                   help="run only the i-th of n disjoint shares of the grid (1 ≤ i ≤ n), one per machine or job")
    g.add_argument("--collect", nargs="+", metavar="FOLDER",
                   help="train nothing: merge the finished runs of these bench folders (shards) into --out's tables")
    b.set_defaults(func=run_bench)

    o = subparsers.add_parser(
        "ood", formatter_class=fmt,
        help="diagnosis metrics vs. the share of LQ images in the test set, and referral risk-coverage curves",
        description="Resample each results pack's test set to a fixed size with a share r of LQ images, for r from "
                    "0 to 1, many times; plot the mean and 95 % band per run. Then quality-aware referral: "
                    "diagnosis error against the share diagnosed, referring by predicted quality, by "
                    "confidence, or by both, and per rule the share to refer so that the error among the images "
                    "kept stays ≤ epsilon with probability ≥ 1 − delta (Learn then Test on the pack's split, "
                    "normally the validation split). Reads saved predictions only.")
    o.add_argument("packs", nargs="+", metavar="[NAME=]PACK",
                   help="results packs or run directories (with one eval-* pack); packs sharing a NAME are pooled")
    add_output(o, "output folder", pools="pools")
    o.add_argument("--metric", choices=["auc", "acc", "f1", "all"], default="all")
    o.add_argument("--ratios", type=int, default=11, help="how many ratios from 0 to 1")
    o.add_argument("--size", type=int, help="images per draw (default: min(#LQ, #HQ) of each pack)")
    o.add_argument("--repeats", type=int, default=200, help="draws per ratio")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--bootstrap", action="store_true", help="draw with replacement (band = sampling uncertainty)")
    o.add_argument("--referral", action="store_true",
                   help="referral only: the risk-coverage curves and the certified operating points, no LQ-ratio draws")
    o.add_argument("--epsilon", type=float, default=0.05,
                   help="the diagnosis error allowed among the images kept (default: 0.05)")
    o.add_argument("--delta", type=float, default=0.1,
                   help="the operating point holds with probability ≥ 1 − delta over the split's draw (default: 0.1)")
    o.add_argument("--quiet", action="store_true", help="no progress on stderr (the results alone)")
    o.set_defaults(func=run_ood)

    e = subparsers.add_parser(
        "embed", formatter_class=fmt, help="t-SNE / UMAP of each branch's features, with separation scores",
        description="2-D embeddings of a results pack's per-branch features (CSV + interactive HTML), and the "
                    "silhouette of each branch's features by diagnosis and by quality.")
    e.add_argument("pack", help="a results pack, or a run directory with one eval-* pack")
    add_output(e, "output folder")
    e.add_argument("--branches", nargs="+", choices=["diagnosis", "quality", "auxiliary", "fused"],
                   help="default: every branch in the pack")
    e.add_argument("--method", choices=["tsne", "umap", "pca"], default="tsne")
    e.add_argument("--color", choices=["diagnosis", "quality", "joint", "correct", "pred_diagnosis"],
                   default="joint")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_embed)

    g = subparsers.add_parser(
        "grads", formatter_class=fmt, help="plot the task-gradient cosines logged during training",
        description="Plot grad_cos.diagnosis_quality and grad_cos.diagnosis_auxiliary from runs' history.jsonl.")
    g.add_argument("runs", nargs="+", metavar="[NAME=]RUN", help="run directories; runs sharing a NAME are averaged")
    add_output(g, "output file stem (writes .csv, .html, .png)", pools="averages")
    g.set_defaults(func=run_grads)

    c = subparsers.add_parser(
        "cam", formatter_class=fmt, help="class activation maps of every feature branch, as PNG + npy files",
        description="For each image: the diagnosis, quality and auxiliary ω branches' maps and the fused "
                    "diagnosis map (pytorch-grad-cam, all from one forward pass), each explaining its head's "
                    "top class; writes OUT/<image>.<branch>.png (overlay) and .npy (raw map), and OUT/cams.csv.")
    c.add_argument("checkpoint", help="run directory (uses best), a zoo folder, or a .safetensors checkpoint")
    c.add_argument("images", nargs="+", help="image files, folders or list files (.txt/.csv)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--method", default="Grad-CAM", help="Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, "
                                                        "EigenCAM or EigenGrad-CAM")
    c.add_argument("--opacity", type=float, default=0.5, help="the heat map's weight in the overlay")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--device", default="auto")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")
    c.set_defaults(func=run_cam)
