"""`mkcnet train`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from mkcnet.config import TRAIN_WORDS, RunConfig
from mkcnet.errors import UserError
from mkcnet.methods import METHODS, apply_method
from mkcnet.presets import DATASETS, PROTOCOLS, TRAINING, DatasetPreset, build_run_config, dataset_from_file


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(s) for s in text.split(","))


def _mapping(text: str) -> dict[int, int]:
    if text.strip().lower() == "none":
        return {}
    try:
        return {int(k): int(v) for k, v in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RAW:INDEX pairs such as 0:2,1:1,2:0 or 'none', got {text!r}") from None


def custom_dataset(args: argparse.Namespace) -> DatasetPreset:
    """A data set described without code: a JSON file of DatasetPreset fields, or flags."""
    if args.dataset_config:
        return dataset_from_file(args.dataset_config)
    if not (args.diagnosis_names and args.quality_names):
        raise UserError("--dataset custom needs --diagnosis-names and --quality-names (or --dataset-config FILE)")
    channels = args.channels or 3
    return DatasetPreset(
        "custom", channels, _names(args.diagnosis_names), _names(args.quality_names),
        mean=args.mean or (0.5,) * channels, std=args.std or (0.25,) * channels,
        meta_length=args.meta_length or 5, entropy_weight=args.entropy_weight or 0.2,
        meta_lr=args.meta_lr or 0.01, step_size=20, epochs=200, batch_size=8,
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.config:
        config = RunConfig.load(args.config)
        if args.root:
            config.data.root = args.root
        if args.epochs:  # with --resume: the same run carried on to more epochs on its own LR steps
            config.train.epochs = args.epochs
        config.data.allow_outside_root |= args.allow_outside_root
        config.train.sync_bn |= args.sync_bn
        return apply_method(config)
    custom = args.dataset == "custom" or args.dataset_config
    dataset = custom_dataset(args) if custom else DATASETS[args.dataset]
    if args.channels and args.channels not in (1, 3):
        raise UserError(f"--channels must be 1 or 3, got {args.channels}")
    config = build_run_config(
        dataset, args.preset, args.method, root=args.root or "",
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, meta_lr=args.meta_lr, backbone=args.backbone,
        meta_backbone=args.meta_backbone, image_size=args.image_size, seed=args.seed, device=args.device,
        meta_every=args.meta_every, in_chans=args.channels, meta_length=args.meta_length,
        entropy_weight=args.entropy_weight, train_split=args.train_split, val_split=args.val_split,
        mean=args.mean, std=args.std, output_stride=args.output_stride, train_lq_ratio=args.train_lq_ratio,
        protocol=args.protocol, augment=args.augment, val_every=args.val_every, select=args.select,
        meta_scope=args.meta_scope, meta_step=args.meta_step, meta_optimizer=args.meta_optimizer,
        meta_outer_weight=args.meta_outer_weight, meta_weight_decay=args.meta_weight_decay,
        meta_outer_schedule=args.meta_outer_schedule,
    )
    if args.output_stride == 0:
        config.model.output_stride = None
    if len(config.model.mean) != config.model.in_chans or len(config.model.std) != config.model.in_chans:
        raise UserError(f"--mean/--std need {config.model.in_chans} value(s), one per channel")
    config.data.allow_outside_root = args.allow_outside_root
    if args.quality_map is not None:
        config.data.quality_map = args.quality_map or None
    config.train.sync_bn = args.sync_bn
    return config


def launch(nproc: int, argv: list[str]) -> int:
    """`mkcnet train --nproc N ...`: torchrun's own launcher, N ranks on this machine."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for arg in argv:  # the same command without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "mkcnet", *rest])
    except ChildFailedError as err:  # each rank has printed its own one-line error above
        code = next(iter(err.failures.values())).exitcode if err.failures else 1
        print(f"mkcnet train: {len(err.failures)} of {nproc} ranks failed (their messages are above)",
              file=sys.stderr)
        return code if code > 0 else 1
    return 0


def run_train(args: argparse.Namespace) -> int:
    from mkcnet.training import distributed

    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError(f"--nproc must be 1 or more, got {args.nproc}")
        if distributed.launched():
            raise UserError("--nproc starts torchrun itself; under torchrun, leave it out")
        config = config_from_args(args)
        if args.nproc > 1:  # refuse what every rank would refuse, before starting them
            from mkcnet.device import resolve_device

            if config.train.sync_bn:
                distributed.check_sync_bn(resolve_device(config.train.device))
            distributed.rank_batch(config.train.batch_size, distributed.Ranks(0, args.nproc), config.train.sync_bn)
        return launch(args.nproc, sys.argv[1:])
    config = config_from_args(args)
    ranks = distributed.initialise(config.train.device)
    try:
        return train_ranks(args, config, ranks)
    finally:
        distributed.shutdown()


def train_ranks(args: argparse.Namespace, config, ranks) -> int:
    """Train in this process: alone, or as one rank of a torchrun job (rank 0 reports). Rank 0
    holds the run folder's lock from the check for an earlier run to the end of calibration."""
    from mkcnet.data.dataset import read_split
    from mkcnet.run_lock import hold_run

    root = Path(config.data.root)
    if not root.is_dir():
        raise UserError(f"data-set root not found: {root}")
    mc = config.model
    split_args = (root, config.data.diagnosis_map, mc.num_diagnosis, mc.num_quality, config.data.allow_outside_root)
    train_table = read_split(root / config.data.train_split, *split_args, quality_map=config.data.quality_map)
    val_table = (read_split(root / config.data.val_split, *split_args, quality_map=config.data.quality_map)
                 if config.data.val_split else None)
    out = Path(args.out)
    with hold_run(out) if ranks.main else contextlib.nullcontext():
        if not args.resume and (out / "state.safetensors").exists() and not args.overwrite:
            raise UserError(f"{out} already holds a run; use --resume to continue it or --overwrite to start over")
        return _train_and_calibrate(args, config, ranks, out, train_table, val_table)


def _train_and_calibrate(args: argparse.Namespace, config, ranks, out: Path, train_table, val_table) -> int:
    from mkcnet.data.dataset import ImageSet
    from mkcnet.training.trainer import Trainer

    mc = config.model
    if not ranks.main:
        ranks.barrier()  # rank 0 decodes first; the others then read its image cache
    train = ImageSet.load(train_table, mc.input, progress=ranks.main)
    val = ImageSet.load(val_table, mc.input) if val_table and ranks.main else None
    if ranks.main:
        ranks.barrier()
    result = Trainer(config, out, progress=not args.quiet, ranks=ranks).fit(train, val, resume=args.resume)
    if not ranks.main:
        return 0
    best = result.best_metrics
    on = f" on {ranks.world_size} ranks" if ranks.distributed else ""
    print(f"done: {out}  best epoch {result.best_epoch}  val AUC {best.get('diagnosis.auc', float('nan')):.4f}  "
          f"ACC {best.get('diagnosis.acc', float('nan')):.4f}  F1 {best.get('diagnosis.f1', float('nan')):.4f}  "
          f"({result.minutes:.1f} min{on})")
    if val_table is not None:
        from mkcnet.inference.evaluate import calibrate_checkpoint

        # Calibrated probabilities and the out-of-distribution guard come with every run that has a
        # validation split (`mkcnet calibrate` redoes this after the weights change).
        model = calibrate_checkpoint(out, device=config.train.device, progress=not args.quiet)
        temps = ", ".join(f"{h} {t:.2f}" for h, t in model.calibration.temperatures.items())
        print(f"calibrated {model.path.name}: temperatures {temps}; out-of-distribution threshold "
              f"{model.guard.threshold:.3f} ({model.guard.method})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train MKCNet or a baseline on a data set in the split format",
        description="Train a model. The data set root holds the split files (image_path,diagnosis,quality) "
                    "and the images. Writes a run directory with config, history, best/last checkpoints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="ct-iqad", choices=[*DATASETS, "custom"], help="data-set preset")
    p.add_argument("--root", help="data-set root folder (split files and images)")
    p.add_argument("--method", default="mkcnet", choices=list(METHODS), help="model / training method")
    p.add_argument("--preset", default="cpu", choices=list(TRAINING),
                   help="; ".join(f"{k}: {v.description}" for k, v in TRAINING.items()))
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--train-split", help="split file, relative to the root (default train.csv)")
    p.add_argument("--val-split", help="validation split file, relative to the root (default val.csv)")
    p.add_argument("--config", help="a run's config.json to train again (overrides the preset flags but "
                   "--epochs: with --resume, `--config RUN/config.json --out RUN --epochs N` carries RUN on to N "
                   "epochs on its own learning-rate steps)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="let split rows name files outside the data-set root (trusted local data only)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="start over in a run directory that holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch is still printed)")
    d = p.add_argument_group("data parallel (see docs/distributed.md; or start the command under torchrun)")
    d.add_argument("--nproc", type=int, metavar="N",
                   help="train on N ranks of this machine (one per GPU, or N CPU processes with gloo) via torchrun")
    d.add_argument("--sync-bn", action="store_true",
                   help="CUDA ranks: Stage I BatchNorm statistics over the global batch (SyncBatchNorm)")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--meta-lr", type=float)
    g.add_argument("--backbone", help="any timm model name, e.g. resnet18, resnet10t, vgg16_bn")
    g.add_argument("--meta-backbone", help="timm name of the meta learner's backbone")
    g.add_argument("--image-size", type=int)
    g.add_argument("--output-stride", type=int, help="backbone output stride (16: finer maps; 0: the net's own)")
    g.add_argument("--meta-every", type=int, help="run Stage II on every k-th batch")
    g.add_argument("--meta-step", choices=TRAIN_WORDS["meta_step"],
                   help="Stage II through the pseudo-updated θ̃ (the paper), or its first-order expansion around θ "
                        "(one extra forward)")
    g.add_argument("--meta-scope", choices=TRAIN_WORDS["meta_scope"],
                   help="what the pseudo step covers: the whole Task Net (the paper), its last backbone stage and up, "
                        "or the branches and heads over held backbone features")
    g.add_argument("--meta-optimizer", choices=TRAIN_WORDS["meta_optimizer"], help="the Meta Learner's optimiser")
    g.add_argument("--meta-weight-decay", type=float, help="the Meta Learner's weight decay")
    g.add_argument("--meta-outer-weight", type=float, help="weight of L_d + L_q at θ̃ in Stage II's objective")
    g.add_argument("--meta-outer-schedule", choices=TRAIN_WORDS["meta_outer_schedule"],
                   help="lr: the outer weight grows as θ's learning rate decays (weight × lr / current lr), "
                        "keeping the meta term's size against the regulariser")
    g.add_argument("--protocol", choices=tuple(PROTOCOLS),
                   help="official: no augmentation, validate every 20 epochs, select on hard AUC (the official "
                        "code); project: flips and shifts, validate every epoch, select on AUC")
    g.add_argument("--augment", choices=TRAIN_WORDS["augment"], help="training augmentation")
    g.add_argument("--val-every", type=int, metavar="N", help="validate (and choose the best epoch) every N epochs")
    g.add_argument("--select", choices=TRAIN_WORDS["select"],
                   help="the best epoch's validation metric: probability AUC or hard-prediction AUC")
    g.add_argument("--seed", type=int)
    g.add_argument("--train-lq-ratio", type=float, metavar="R",
                   help="train on a subsample of the training split with this share of LQ images (0..1; "
                        "as many images as the share allows, drawn by --seed)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    c = p.add_argument_group("custom data set (with --dataset custom)")
    c.add_argument("--dataset-config", help="JSON file with the data-set fields (see README)")
    c.add_argument("--diagnosis-names", help="comma-separated diagnosis class names, in label order")
    c.add_argument("--quality-names", help="comma-separated quality names, worst first (higher = better)")
    c.add_argument("--channels", type=int, help="1 (grey) or 3 (RGB)")
    c.add_argument("--mean", type=_floats, help="normalisation mean per channel, e.g. 0.5 or 0.4,0.3,0.2")
    c.add_argument("--std", type=_floats, help="normalisation std per channel")
    c.add_argument("--quality-map", type=_mapping, metavar="RAW:INDEX,...",
                   help="the split files' quality labels to indices, higher = better (e.g. 0:2,1:1,2:0 for "
                        "split files where 0 is the best); 'none' reads them as they are")
    c.add_argument("--meta-length", type=int, help="auxiliary classes per (diagnosis, quality) pair")
    c.add_argument("--entropy-weight", type=float, help="weight of the entropy regulariser")
    p.set_defaults(func=run_train)
