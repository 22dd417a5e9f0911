"""Data-parallel training on 2 CPU ranks (gloo): the step of a one-process run on the global batch,
one run directory, resume with the same or another number of ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from mkcnet.config import InputSpec
from mkcnet.data.dataset import ImageSet, SplitTable
from mkcnet.training import distributed, trainer
from mkcnet.training.distributed import Ranks
from tests.conftest import tiny_config

RANKS = 2


def without_batch_norm(build):
    """build_networks with every BatchNorm replaced by Identity: per-rank batch statistics are the
    one thing a data-parallel step may not share with one process (SyncBatchNorm needs CUDA)."""
    def strip(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(module, name, torch.nn.Identity())
            else:
                strip(child)

    def wrapped(config):
        nets = build(config)
        for net in nets:
            if net is not None:
                strip(net)
        return nets
    return wrapped


def global_batch(n: int = 8) -> ImageSet:
    """One global batch: n images, both labels of every kind, deterministic."""
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, 32, 32), dtype=np.uint8))
    table = SplitTable(Path("."), [f"{i}.png" for i in range(n)], np.arange(n) % 2, (np.arange(n) // 2) % 2)
    return ImageSet(table, images, InputSpec(1, 32, (0.5,), (0.25,)))


def one_iteration(method: str, entropy_weight: float, ranks: Ranks, run_dir: str,
                  step: str = "pseudo") -> dict[str, torch.Tensor]:
    """How θ and φ move in a one-epoch run on one global batch (augmented, batch 8): one Stage I
    and one Stage II step (`step`: through θ̃, or the cpu preset's first order around θ), φ by SGD."""
    config = tiny_config(method, meta_step=step, meta_optimizer="sgd", meta_outer_weight=1.0)
    config.train.weight_decay = config.train.meta_weight_decay = 0.0  # Δ = gradient step only
    config.train.device = "cpu"
    # A pseudo step large enough that L(θ̃) moves φ, and a φ step well above float32 rounding: at
    # the preset's rates the regulariser's gradient is ~500x the outer loss's, which would hide it.
    config.train.lr, config.train.meta_lr, config.train.entropy_weight = 0.3, 100.0, entropy_weight
    run = trainer.Trainer(config, run_dir, progress=False, verbose=False, ranks=ranks)
    before = {**{f"task.{k}": v.clone() for k, v in run.task_net.state_dict().items()},
              **{f"meta.{k}": v.clone() for k, v in run.meta.state_dict().items()}}
    run.fit(global_batch())
    after = {**{f"task.{k}": v for k, v in run.task_net.state_dict().items()},
             **{f"meta.{k}": v for k, v in run.meta.state_dict().items()}}
    return {k: (after[k] - before[k]).detach().clone() for k in before if before[k].is_floating_point()}


def _rank_worker(rank: int, method: str, entropy_weight: float, tmp: str, step: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=RANKS)
    trainer.build_networks = without_batch_norm(trainer.build_networks)  # a process of its own
    try:
        from safetensors.torch import save_file

        updates = one_iteration(method, entropy_weight, distributed.current(), f"{tmp}/ranks-run", step)
        save_file({k: v.contiguous() for k, v in updates.items()}, f"{tmp}/updates.rank{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("entropy_weight", [0.0, 0.2], ids=["outer-loss", "with-regulariser"])
@pytest.mark.parametrize("method, step", [("mkcnet", "pseudo"), ("mkcnet-fo", "pseudo"), ("mkcnet", "aligned")],
                         ids=["mkcnet", "mkcnet-fo", "mkcnet-aligned"])
def test_two_ranks_take_the_one_process_step_on_the_global_batch(method, step, entropy_weight, tmp_path, monkeypatch):
    mp.spawn(_rank_worker, args=(method, entropy_weight, str(tmp_path), step), nprocs=RANKS)
    monkeypatch.setattr(trainer, "build_networks", without_batch_norm(trainer.build_networks))
    single = one_iteration(method, entropy_weight, Ranks(), str(tmp_path / "one-process-run"), step)
    ranks = [load_file(str(tmp_path / f"updates.rank{r}")) for r in range(RANKS)]
    # Rounding only: (mean of 4 + mean of 4) / 2 against the mean of 8, through a double backward,
    # and the first-order step divides a difference of two losses by 2ε, which scales rounding up.
    # Measured: at most 3e-7 absolute (4e-6 of the largest update); a ȳ of each rank's own share
    # instead of the global batch's is off by 2.5e-4.
    def tolerance(scale: float) -> float:
        return 1e-4 * scale + 1e-6

    for net in ("task", "meta"):
        keys = [k for k in single if k.startswith(net + ".")]
        scale = max(float(single[k].abs().max()) for k in keys)
        assert scale > 1e-4, f"{net}: the step moved nothing, the comparison would be empty"
        worst = max(float((u[k] - single[k]).abs().max()) for u in ranks for k in keys) / scale
        print(f"{method} {net}: largest update {scale:.3g}, largest difference {worst:.2g} of it")
        for k in keys:
            for r, updates in enumerate(ranks):
                torch.testing.assert_close(updates[k], single[k], rtol=0, atol=tolerance(scale),
                                           msg=lambda m, r=r, k=k: f"rank {r} {k}: {m}")


# -- the command: one run directory, resume across rank counts ----------------------------------
def train(root: Path, out: Path, epochs: int, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mkcnet", "train", "--dataset", "ct-iqad", "--root", str(root), "--method",
            "mkcnet-fo", "--out", str(out), "--epochs", str(epochs), "--image-size", "32", "--batch-size", "8",
            "--backbone", "resnet10t", "--meta-backbone", "resnet10t", "--device", "cpu", "--quiet", *extra]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_two_rank_run_writes_one_directory_and_resumes_on_any_number_of_ranks(tiny_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_dataset, straight, 2, RANKS)
    first = train(tiny_dataset, resumed, 1, RANKS)
    assert first.stdout.count("done:") == 1  # rank 0 alone reports
    files = sorted(p.name for p in resumed.iterdir())
    assert files == [".lock", "best.json", "best.safetensors", "config.json", "history.csv", "history.jsonl",
                     "last.json", "last.safetensors", "state.safetensors"]  # .lock: rank 0's alone (run_lock.py)
    train(tiny_dataset, resumed, 2, RANKS, "--resume")
    a, b = load_file(str(straight / "state.safetensors")), load_file(str(resumed / "state.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # the same ranks: the resumed run is the uninterrupted one, bit for bit
        assert torch.equal(a[k], b[k]), k
    train(tiny_dataset, resumed, 3, 1, "--resume")  # and on one process
    rows = [json.loads(line) for line in (resumed / "history.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["ranks"]) for r in rows] == [(1, 2), (2, 2), (3, 1)]


def test_batches_that_the_ranks_cannot_share_are_refused():
    with pytest.raises(Exception, match="does not split evenly over 3 ranks"):
        distributed.rank_batch(8, Ranks(0, 3), sync_bn=False)
    with pytest.raises(Exception, match="BatchNorm needs 2"):
        distributed.rank_batch(4, Ranks(0, 4), sync_bn=False)
    assert distributed.rank_batch(4, Ranks(0, 4), sync_bn=True) == 1


def test_the_shares_of_a_global_batch_are_the_one_process_batch():
    data = global_batch(11)
    one = list(data.batches(4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(5),
                            drop_singleton=True))
    shares = [list(data.batches(4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(5),
                                drop_singleton=True, shard=(r, 2))) for r in range(2)]
    assert [len(b.index) for b in one] == [4, 4, 3]
    # The trailing 3 lose one image, and 1 + 1 would give each rank a single image: left out.
    assert [len(s) for s in shares] == [2, 2]
    for i in range(2):  # full batches: the shares, joined, are the batch, augmentation included
        joined = torch.cat([shares[0][i].images, shares[1][i].images])
        assert torch.equal(joined, one[i].images)
        assert torch.equal(torch.cat([shares[0][i].index, shares[1][i].index]), one[i].index)
