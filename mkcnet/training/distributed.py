"""Data-parallel training on torch.distributed: who this process is, and the few collectives we need.

`torchrun --nproc-per-node N -m mkcnet train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous in the environment; `initialise` joins the process group (NCCL on
CUDA, gloo on CPU) and the Trainer reads `Ranks` from it. Every rank holds the whole data set in
memory and takes its own contiguous share of every global batch (`ImageSet.batches(shard=...)`),
so a run on N ranks sees exactly the batches of a run on one.

Stage I is ordinary DistributedDataParallel. Stage II cannot be: DDP averages `.grad` in its
reducer's backward hooks, outside autograd, so a gradient taken with `create_graph=True` would
leave the average out of the graph and the meta gradient would miss every other rank's
contribution. The meta step therefore averages the pseudo-step gradient itself through
`torch.distributed.nn.functional.all_reduce`, an autograd Function whose backward is again an
all-reduce, and then averages φ's gradient like DDP would (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from mkcnet.errors import UserError

# Rank 0 validates and writes checkpoints while the others wait at a barrier: allow for it.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run directory, logs and shows progress."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def mean(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over ranks of each tensor, differentiable (its backward is an all-reduce too):
        one collective on the tensors flattened together."""
        if not self.distributed:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])
        with warnings.catch_warnings():
            # Deprecated in favour of a private module (_functional_collectives) whose all_reduce
            # has no autograd; this one is still public and differentiable (torch pinned below 3).
            warnings.simplefilter("ignore", FutureWarning)
            flat = dist_nn.all_reduce(flat, op=dist.ReduceOp.SUM) / self.world_size
        return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Per-rank averages (losses of an epoch) → averages over every rank's share."""
        if not self.distributed or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(values)
        return {k: float(v) / self.world_size for k, v in zip(keys, values.cpu())}

    def broadcast(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank (the same seed builds the same weights;
        this makes it so whatever a backbone's initialiser does)."""
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


ONE_PROCESS = Ranks()


def current() -> Ranks:
    """The Ranks of the joined process group, or one process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialise(device: str = "auto") -> Ranks:
    """Join the process group torchrun describes in the environment: NCCL when the run trains on
    CUDA, gloo otherwise. Each CUDA rank gets the GPU of its LOCAL_RANK. No-op in one process."""
    if not launched() or dist.is_initialized():
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"rank with LOCAL_RANK {local_rank} has no GPU (this machine has "
                            f"{torch.cuda.device_count()}); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return current()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """A CUDA run puts rank r on GPU LOCAL_RANK whatever index `--device` named."""
    if ranks.distributed and device.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return device


def check_sync_bn(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError("--sync-bn needs CUDA ranks (SyncBatchNorm has no CPU kernel); "
                        "without it each rank normalises its own share of the batch")


def rank_batch(batch_size: int, ranks: Ranks, sync_bn: bool) -> int:
    """Images per rank in a global batch of `batch_size`; refuses a batch the ranks cannot share."""
    if batch_size % ranks.world_size:
        raise UserError(f"a batch of {batch_size} does not split evenly over {ranks.world_size} ranks; "
                        f"use --batch-size a multiple of {ranks.world_size}")
    per_rank = batch_size // ranks.world_size
    if per_rank < 2 and not sync_bn:
        raise UserError(f"a batch of {batch_size} over {ranks.world_size} ranks leaves {per_rank} image per rank, "
                        f"and BatchNorm needs 2; use --batch-size {2 * ranks.world_size} or more, or --sync-bn")
    return per_rank


def own_group():
    """A process group of this rank alone (every rank must call this, in the same order)."""
    group, _ = dist.new_subgroups(group_size=1)
    return group


@contextlib.contextmanager
def batch_norm_group(module: torch.nn.Module, group):
    """SyncBatchNorm layers normalise over `group` inside the block (None: leave them as they are).

    Stage II runs with `group` = this rank alone: SyncBatchNorm's backward kernels have no
    derivative, so the second-order pseudo step cannot run through them; each rank then
    normalises its own share, as without --sync-bn."""
    layers = [m for m in module.modules() if isinstance(m, torch.nn.SyncBatchNorm)] if group is not None else []
    saved = [m.process_group for m in layers]
    for m in layers:
        m.process_group = group
    try:
        yield
    finally:
        for m, g in zip(layers, saved):
            m.process_group = g


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
