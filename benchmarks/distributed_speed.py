"""Data-parallel training speed: seconds per epoch on 1 rank against N ranks (gloo on CPU, NCCL on
CUDA), the same global batch and data, at a preset. Not a test: it takes minutes.

    python benchmarks/distributed_speed.py                       # cpu preset, 1 vs 2 CPU ranks
    python benchmarks/distributed_speed.py --ranks 2 --methods mkcnet --images 512
    python benchmarks/distributed_speed.py --device cuda --ranks 1   # one GPU, for reference

On CPU the cores are shared: 1 rank gets every core as intra-op threads, N ranks get cores/N
each. On a 2-core machine expect no speed-up; the ratio shows the cost of the collectives, the
per-rank batch halving and the duplicated Meta Learner forward. Random images of the preset's
size, so it needs no data set. The configurations take turns in every repeat (median reported).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mkcnet.data.dataset import ImageSet, SplitTable
from mkcnet.presets import build_run_config
from mkcnet.training import distributed
from mkcnet.training.trainer import Trainer


def epoch_seconds(rank: int, ranks: int, args, rendezvous: str, out: str) -> None:
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // ranks))
    if ranks > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank, world_size=ranks)
    config = build_run_config(args.dataset, args.preset, args.method, epochs=1, device=args.device)
    mc, spec = config.model, config.model.input
    rng = np.random.default_rng(0)
    n = args.images
    table = SplitTable(None, [f"{i}.png" for i in range(n)], rng.integers(0, mc.num_diagnosis, n),
                       rng.integers(0, mc.num_quality, n))
    images = torch.from_numpy(rng.integers(0, 255, (n, spec.channels, spec.size, spec.size), np.uint8))
    data = ImageSet(table, images, spec)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False, verbose=False, ranks=distributed.current())
        trainer.stage_one_net = trainer._data_parallel(data)
        trainer.train_epoch(data)  # warm-up
        trainer.ranks.barrier()
        start = time.perf_counter()
        trainer.train_epoch(data)
        trainer.ranks.barrier()
        seconds = time.perf_counter() - start
    if rank == 0:
        with open(out, "w") as f:
            f.write(str(seconds))
    distributed.shutdown()


def measure(ranks: int, args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/seconds"
        mp.spawn(epoch_seconds, args=(ranks, args, f"{tmp}/rendezvous", out), nprocs=ranks)
        return float(open(out).read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2, help="compare 1 rank with this many")
    p.add_argument("--methods", nargs="+", default=["vanilla", "mkcnet"])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset", default="ct-iqad")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    counts = sorted({1, args.ranks})
    print(f"{args.preset} preset, {args.dataset} shapes, {args.images} images, {os.cpu_count()} CPU cores, "
          f"device {args.device}, torch {torch.__version__}")
    for method in args.methods:
        args.method = method
        times: dict[int, list[float]] = {c: [] for c in counts}
        for _ in range(args.repeats):
            for c in counts:
                times[c].append(measure(c, args))
        line = "  ".join(f"{c} rank(s) {statistics.median(t):.1f} s/epoch" for c, t in times.items())
        if len(counts) > 1:
            ratios = [a / b for a, b in zip(times[1], times[args.ranks])]
            line += f"  speed-up {statistics.median(ratios):.2f}x (median of {args.repeats} paired repeats)"
        print(f"{method:10s} {line}", flush=True)


if __name__ == "__main__":
    main()
