"""Training speed at a preset: images/s for the official vanilla, multitask and MKCNet as the
preset trains it, and each epoch's cost as a multiple of vanilla's (interleaved, median of
pairs). Not a test: it takes a few minutes.

    python benchmarks/train_speed.py                 # cpu preset, CT-IQAD shapes (1 channel)
    python benchmarks/train_speed.py --images 512 --compare network:1 network:10
        # adds MKCNet with the exact whole-network pseudo step on every batch and on every 10th

Uses random images of the preset's size, so it needs no data set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from mkcnet.data.dataset import ImageSet, SplitTable
from mkcnet.presets import build_run_config
from mkcnet.training.trainer import Trainer


def make_trainer(label: str, args, data_cache: dict, workdir: str) -> tuple[Trainer, ImageSet]:
    """`label`: a method name, or "mkcnet@STEP:EVERY" for MKCNet with another Stage II schedule, STEP
    one of aligned, network, top, heads (the last three: the exact pseudo step over that scope)."""
    method, _, schedule = label.partition("@")
    overrides = {}
    if schedule:
        step, every = schedule.split(":")
        overrides = {"meta_every": int(every)} | ({"meta_step": "aligned"} if step == "aligned" else
                                                  {"meta_step": "pseudo", "meta_scope": step})
    config = build_run_config(args.dataset, args.preset, method, epochs=1, device=args.device,
                              channels_last=args.channels_last, meta_image_size=args.meta_image_size, **overrides)
    mc, spec = config.model, config.model.input
    if spec not in data_cache:
        rng = np.random.default_rng(0)
        n = args.images
        table = SplitTable(None, [f"{i}.png" for i in range(n)], rng.integers(0, mc.num_diagnosis, n),
                           rng.integers(0, mc.num_quality, n))
        images = torch.from_numpy(rng.integers(0, 255, (n, spec.channels, spec.size, spec.size), np.uint8))
        data_cache[spec] = ImageSet(table, images, spec)
    return Trainer(config, f"{workdir}/{label}", progress=False, verbose=False), data_cache[spec]


def measure(args) -> dict[str, list[float]]:
    """Seconds per epoch for each method, the methods taking turns in every repeat, so a burst of
    other load on the machine hits them alike; ratios are taken repeat by repeat."""
    methods = ("vanilla", "multitask", "mkcnet", *(f"mkcnet@{c}" for c in args.compare))
    cache: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {m: make_trainer(m, args, cache, tmp) for m in methods}
        for trainer, data in runs.values():
            trainer.train_epoch(data)  # warm-up (allocator, oneDNN kernels)
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for m, (trainer, data) in runs.items():
                start = time.perf_counter()
                trainer.train_epoch(data)
                times[m].append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ct-iqad")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--images", type=int, default=256, help="images per measured epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compare", nargs="*", default=[], metavar="SCOPE:EVERY",
                   help="also time MKCNet with these Stage II schedules, e.g. network:1 heads:1 aligned:2")
    p.add_argument("--device", default="auto")
    p.add_argument("--channels-last", action="store_true", default=None, help="the Task Net in channels_last (all methods)")
    p.add_argument("--meta-image-size", type=int, help="the Meta Learner's input size")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, "
          f"{args.images} images per epoch")
    times = measure(args)
    print(f"{'method':22} {'img/s (median)':>15} {'epoch x vanilla (median of pairs)':>34}")
    for method, seconds in times.items():
        ratios = [s / v for s, v in zip(seconds, times["vanilla"])]
        print(f"{method:22} {args.images / statistics.median(seconds):15.1f} {statistics.median(ratios):34.2f}"
              f"   ({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
