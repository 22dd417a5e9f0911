"""One full MKCNet training iteration at paper scale: a Stage I step of the Task Net and an
exact second-order Stage II step of the Meta Learner, VGG16-BN from scratch.

    python benchmarks/meta_iteration.py [--size 128] [--batch 8] [--threads 2] [--repeats 5]

Prints seconds per iteration (median and min of the repeats, after one warm-up) and the
process's peak resident memory, so the figures can be set beside another implementation's
measured the same way on the same machine. Random images; needs no data set.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from mkcnet.data.dataset import Batch
from mkcnet.models import build_networks
from mkcnet.presets import build_run_config
from mkcnet.training.meta_step import PseudoStep, meta_step
from mkcnet.training.objective import task_losses


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dataset", default="ct-iqad")
    p.add_argument("--meta-format", choices=["channels_last", "contiguous"], default="channels_last",
                   help="the Meta Learner's memory format (the Trainer uses channels_last)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = build_run_config(args.dataset, "paper", "mkcnet", image_size=args.size)
    mc, tc = config.model, config.train
    task_net, meta = build_networks(mc)
    task_net.train(), meta.train()
    meta.to(memory_format=getattr(torch, args.meta_format if args.meta_format == "channels_last" else "contiguous_format"))
    optimizer = torch.optim.SGD(task_net.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    meta_optimizer = torch.optim.SGD(meta.parameters(), lr=tc.meta_lr, momentum=tc.momentum,
                                     weight_decay=tc.meta_weight_decay)
    batch = Batch(torch.randn(args.batch, mc.in_chans, args.size, args.size),
                  torch.randint(0, mc.num_diagnosis, (args.batch,)), torch.randint(0, mc.num_quality, (args.batch,)),
                  torch.arange(args.batch))

    def iteration() -> None:
        with torch.no_grad():
            labels = meta.labels(batch.images, batch.diagnosis, batch.quality)
        parts = task_losses(task_net(batch.images), batch, labels, tc.focal_gamma, mc.meta_length)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        meta_step(task_net, meta, meta_optimizer, batch, PseudoStep.of(optimizer, task_net), tc.entropy_weight,
                  tc.focal_gamma, second_order=True)

    iteration()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in task_net.parameters()) / 1e6, sum(p.numel() for p in meta.parameters()) / 1e6
    print(f"VGG16-BN Task Net {params[0]:.1f} M + Meta Learner {params[1]:.1f} M parameters, {args.size} px, batch "
          f"{args.batch}, {args.threads} threads: {statistics.median(times):.2f} s / iteration (min {min(times):.2f}, "
          f"n={args.repeats}), peak memory {peak_rss_gib():.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
