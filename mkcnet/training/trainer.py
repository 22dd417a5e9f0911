"""The training loop: Stage I / Stage II per epoch, validation, run directory, resume.

Run directory layout:
    config.json                 the resolved RunConfig
    history.jsonl, history.csv  one row per epoch (losses, validation metrics, minutes)
    best.safetensors/.json      the epoch with the best validation diagnosis AUC
    last.safetensors/.json      the latest epoch
    state.safetensors           weights, optimiser state and counters for --resume (one atomic file)
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mkcnet.checkpoint import atomic_write, load_into, save_checkpoint
from mkcnet.config import RunConfig
from mkcnet.data.dataset import Batch, ImageSet
from mkcnet.data.shift import lq_subset
from mkcnet.device import autocast, memory_format, resolve_device
from mkcnet.errors import UserError
from mkcnet.inference.predict import predict_batches
from mkcnet.methods import get_method
from mkcnet.metrics import evaluation_metrics
from mkcnet.models import build_networks
from mkcnet.models.meta_learner import RandomLabels
from mkcnet.models.task_net import TaskOutput
from mkcnet.training import distributed
from mkcnet.training.distributed import Ranks
from mkcnet.training.gradients import gradient_cosines
from mkcnet.training.meta_step import meta_step
from mkcnet.training.mixup import mix_batch
from mkcnet.training.objective import LossParts, task_losses

STATE_FILE = "state.safetensors"
STATE_KEY = "mkcnet-state"  # the counters, in the state file's own header


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    minutes: float


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, progress: bool = True, verbose: bool = True,
                 ranks: Ranks | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        # Data parallel (training/distributed.py): the joined process group's ranks, or one process.
        self.ranks = distributed.current() if ranks is None else ranks
        self.progress = progress and self.ranks.main  # progress bars
        self.verbose = verbose and self.ranks.main  # one summary line per epoch
        tc = config.train
        self.device = distributed.rank_device(resolve_device(tc.device), self.ranks)
        self.sync_bn = tc.sync_bn and self.ranks.distributed
        if self.sync_bn:
            distributed.check_sync_bn(self.device)
        if self.ranks.distributed:
            distributed.rank_batch(tc.batch_size, self.ranks, self.sync_bn)
        self.amp = tc.amp and self.device.type == "cuda"
        # channels_last speeds up CUDA convolutions under AMP; on CPU it slows the double backward.
        self.channels_last = tc.channels_last if tc.channels_last is not None else self.device.type == "cuda"
        self.mem = memory_format(self.channels_last)
        seed_everything(tc.seed)
        self.method = get_method(config.model.method)
        self.task_net, self.meta = build_networks(config.model)
        self.local_group = None  # with SyncBatchNorm: a group of this rank alone, for Stage II
        if self.sync_bn:
            self.task_net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.task_net)
            if self.meta is not None:
                self.meta = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.meta)
            self.local_group = distributed.own_group()
        self.task_net.to(self.device, memory_format=self.mem)
        self.ranks.broadcast(self.task_net)
        self.stage_one_net: torch.nn.Module = self.task_net  # DistributedDataParallel on several ranks (fit)
        self.optimizer = torch.optim.SGD(self.task_net.parameters(), lr=tc.lr, momentum=tc.momentum,
                                         weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, tc.step_size, tc.lr_gamma)
        self.meta_optimizer = self.meta_scheduler = None
        self.random_labels: RandomLabels | None = None  # the no-meta ablation's labels, made in fit()
        if self.meta is not None:
            # channels_last on every device: φ is never differentiated twice, and on CPU its
            # label forward takes 138 ms instead of 338 (cpu preset, batch 32, 2 threads); only the
            # Task Net's double backward is slower in channels_last there.
            self.meta.to(self.device, memory_format=torch.channels_last)
            self.ranks.broadcast(self.meta)
            self.meta_optimizer = torch.optim.SGD(self.meta.parameters(), lr=tc.meta_lr, momentum=tc.momentum,
                                                  weight_decay=tc.meta_weight_decay)
            self.meta_scheduler = torch.optim.lr_scheduler.StepLR(self.meta_optimizer, tc.step_size, tc.lr_gamma)
        self.epoch = 0
        self.best_epoch, self.best_score, self.best_metrics = -1, -math.inf, {}
        self.minutes = 0.0

    # -- one epoch -------------------------------------------------------------------------
    def _to_device(self, batch):
        batch.images = batch.images.to(self.device, memory_format=self.mem, non_blocking=True)
        batch.diagnosis = batch.diagnosis.to(self.device)
        batch.quality = batch.quality.to(self.device)
        return batch

    def aux_targets(self, batch: Batch) -> torch.Tensor | None:
        """The auxiliary head's soft targets for a batch: from φ (detached), fixed random ones, or none."""
        if self.meta is not None:
            with torch.no_grad():
                return self.meta.labels(batch.images, batch.diagnosis, batch.quality).float()
        if self.random_labels is not None:
            return self.random_labels.labels(batch.index, batch.diagnosis, batch.quality)
        return None

    def losses(self, out: TaskOutput, batch: Batch) -> LossParts:
        tc = self.config.train
        return task_losses(out, batch, self.aux_targets(batch), tc.focal_gamma, self.config.model.meta_length)

    def train_epoch(self, data: ImageSet) -> dict[str, float]:
        tc = self.config.train
        generator = torch.Generator().manual_seed(tc.seed * 100_003 + self.epoch)
        self.task_net.train()
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(data.batches(tc.batch_size, shuffle=True, augment=tc.augment, generator=generator,
                                drop_singleton=True, shard=self.ranks.shard),
                   total=math.ceil(len(data) / tc.batch_size), desc=f"epoch {self.epoch + 1}/{tc.epochs} stage I",
                   disable=not self.progress, leave=False)
        # Stage I: θ on L_d + L_q + L_ω, auxiliary targets from φ (detached).
        if self.meta is not None:
            self.meta.train()
        for batch in bar:
            batch = self._to_device(batch)
            partner = None
            if self.method.mixup:
                batch, partner, lam = mix_batch(batch, self.method.mixup, generator)
            with autocast(self.device, self.amp):
                out = self.stage_one_net(batch.images)
                parts = self.losses(out, batch)
                if partner is not None:
                    parts = parts.mix(self.losses(out, partner), lam)
            self.optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            self.optimizer.step()
            steps += 1
            for key in ("total", "diagnosis", "quality", "auxiliary"):
                value = getattr(parts, key)
                if value is not None:
                    sums[f"loss.{key}"] = sums.get(f"loss.{key}", 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{sums['loss.total'] / steps:.3f}")
        stats = self.ranks.mean_stats({k: v / max(steps, 1) for k, v in sums.items()})

        # Stage II: φ through the pseudo-updated θ̃, on every `meta_every`-th batch.
        if self.meta is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            meta_sums: dict[str, float] = {}
            n_meta = 0
            batches = data.batches(tc.batch_size, shuffle=True, augment=tc.augment, generator=generator,
                                   every=tc.meta_every, drop_singleton=True, shard=self.ranks.shard)
            for batch in tqdm(batches, total=math.ceil(len(data) / (tc.batch_size * tc.meta_every)),
                              desc=f"epoch {self.epoch + 1}/{tc.epochs} stage II", disable=not self.progress,
                              leave=False):
                # In fp32 whatever Stage I uses: the first-order step is a finite difference of two
                # forwards at ε‖v‖ = 0.01, which bf16 rounding swamps (cosine with the exact
                # gradient 0.55 under bf16 autocast, 0.99 in fp32).
                with distributed.batch_norm_group(self.task_net, self.local_group):
                    out = meta_step(self.task_net, self.meta, self.meta_optimizer, self._to_device(batch), lr,
                                    tc.weight_decay, tc.entropy_weight, tc.focal_gamma, tc.second_order,
                                    ranks=self.ranks)
                n_meta += 1
                for k, v in out.items():
                    meta_sums[k] = meta_sums.get(k, 0.0) + v
            stats |= self.ranks.mean_stats({k: v / max(n_meta, 1) for k, v in meta_sums.items()})
        return stats

    def probe_gradients(self, batch: Batch) -> dict[str, float]:
        """Gradient cosines between the task losses on the shared backbone (see training/gradients.py)."""
        self.task_net.train()
        if self.meta is not None:
            self.meta.eval()  # the probe's labels must not move φ's BatchNorm statistics
        with autocast(self.device, self.amp):
            return gradient_cosines(self.task_net, batch, self.aux_targets(batch), self.config.train.focal_gamma,
                                    self.config.model.meta_length)

    def validate(self, data: ImageSet) -> dict[str, float]:
        preds = predict_batches(self.task_net, data.batches(self.config.train.batch_size * 2), self.device,
                                amp=self.amp, channels_last=self.channels_last)
        return evaluation_metrics(data.table.diagnosis, preds.diagnosis, data.table.quality, preds.quality,
                                  self.config.model.num_quality)

    # -- the run ---------------------------------------------------------------------------
    def fit(self, train: ImageSet, val: ImageSet | None = None, resume: bool = False) -> FitResult:
        tc = self.config.train
        if tc.train_lq_ratio is not None:  # training-side quality shift: the split resampled to that LQ share
            train = train.subset(lq_subset(train.table.quality, self.config.model.num_quality, tc.train_lq_ratio,
                                           tc.seed))
        self._check_labels(train)
        if self.method.aux_labels == "random":
            self.random_labels = RandomLabels(self.config.model, len(train), tc.seed)
        # One fixed, unaugmented batch on which the gradient cosines are measured every epoch.
        probe = next(train.batches(tc.batch_size, shuffle=True, generator=torch.Generator().manual_seed(tc.seed)))
        main = self.ranks.main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temporaries()
        self.ranks.barrier()  # the others read the state file only after rank 0 has tidied the folder
        if resume:
            self._load_state()
        elif main:
            for stale in ("history.jsonl", "history.csv"):
                (self.run_dir / stale).unlink(missing_ok=True)
        if main:
            self.config.save(self.run_dir / "config.json")
        self.stage_one_net = self._data_parallel(train)
        while self.epoch < tc.epochs:
            start = time.perf_counter()
            stats = self.train_epoch(train)
            self.scheduler.step()
            if self.meta_scheduler is not None:
                self.meta_scheduler.step()
            self.epoch += 1
            if main:
                self._finish_epoch(stats, train, val, probe, start)
            self.ranks.barrier()
        return FitResult(self.run_dir, self.best_epoch, self.best_metrics, self.minutes)

    def _data_parallel(self, train: ImageSet) -> torch.nn.Module:
        """Stage I's network: the Task Net itself, or DistributedDataParallel over it on several ranks."""
        if not self.ranks.distributed:
            return self.task_net
        from torch.nn.parallel import DistributedDataParallel

        # Diagnosis-only rows (quality −1) can leave the quality head without a gradient in a batch.
        unused = bool((train.table.quality < 0).any())
        return DistributedDataParallel(self.task_net, device_ids=[self.device.index] if self.device.type == "cuda"
                                       else None, find_unused_parameters=unused)

    def _finish_epoch(self, stats: dict[str, float], train: ImageSet, val: ImageSet | None, probe: Batch,
                      start: float) -> None:
        """Rank 0: probe, validate, log and write the checkpoints and the state of the epoch just trained."""
        if self.config.train.grad_probe:
            stats |= self.probe_gradients(self._to_device(probe))
        metrics = self.validate(val) if val is not None else {}
        self.minutes += (time.perf_counter() - start) / 60
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], "minutes": self.minutes,
               "train.n": len(train), "ranks": self.ranks.world_size, **stats,
               **{f"val.{k}": v for k, v in metrics.items()}}
        self._log(row)
        score = metrics.get("diagnosis.auc", -stats["loss.total"])
        score = -math.inf if score is None or np.isnan(score) else score
        info = {"epoch": self.epoch, "metrics": metrics, "minutes": self.minutes}
        if score > self.best_score or self.best_epoch < 0:
            self.best_epoch, self.best_score, self.best_metrics = self.epoch, score, metrics
            save_checkpoint(self.run_dir / "best", self.task_net, self.meta, self.config, info)
        save_checkpoint(self.run_dir / "last", self.task_net, self.meta, self.config, info)
        self._save_state()

    def _check_labels(self, data: ImageSet) -> None:
        if (self.method.quality or self.method.mask_uses_quality) and (data.table.quality < 0).all():
            raise UserError(f"method {self.method.name!r} needs quality labels, but the training split has none")
        if self.method.mask_uses_quality and (data.table.quality < 0).any():
            raise UserError(f"the {self.method.mask!r} mask needs a quality label on every training image")

    def _log(self, row: dict) -> None:
        with open(self.run_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        rows = [json.loads(line) for line in (self.run_dir / "history.jsonl").read_text().splitlines()]
        pd.DataFrame(rows).to_csv(self.run_dir / "history.csv", index=False)
        if self.verbose:
            tqdm.write(f"epoch {row['epoch']:3d}  loss {row['loss.total']:.4f}  "
                       f"val AUC {row.get('val.diagnosis.auc', float('nan')):.4f}  "
                       f"ACC {row.get('val.diagnosis.acc', float('nan')):.4f}  "
                       f"F1 {row.get('val.diagnosis.f1', float('nan')):.4f}  ({row['minutes']:.1f} min)")

    # -- resume ----------------------------------------------------------------------------
    def _optimizers(self):
        yield "task", self.optimizer, self.task_net
        if self.meta is not None:
            yield "meta", self.meta_optimizer, self.meta

    def _save_state(self) -> None:
        """Weights, optimiser buffers and counters in ONE file, written atomically: a kill at any
        moment leaves either the previous epoch's state or this one's, never a mix."""
        tensors = {}
        for name, opt, module in self._optimizers():
            tensors |= {f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            for i, p in enumerate(module.parameters()):
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    tensors[f"optim.{name}.{i}"] = buf.detach().cpu().contiguous()
        info = {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "best_metrics": self.best_metrics, "minutes": self.minutes}
        metadata = {STATE_KEY: json.dumps(info, default=float)}
        atomic_write(self.run_dir / STATE_FILE, lambda p: save_file(tensors, str(p), metadata=metadata))

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of a killed run (atomic_write's `.NAME.tmpPID`), never read again."""
        for stale in self.run_dir.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)

    def _load_state(self) -> None:
        weights = self.run_dir / STATE_FILE
        if not weights.is_file():
            raise UserError(f"nothing to resume in {self.run_dir} (no {STATE_FILE})")
        try:
            with safe_open(str(weights), "pt") as f:
                info = json.loads((f.metadata() or {})[STATE_KEY])
            tensors = load_file(str(weights))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise UserError(f"{weights.name} in {self.run_dir} is damaged ({type(err).__name__}); start over with "
                            "--overwrite (the last finished epoch's weights are in last.safetensors)") from None
        saved = RunConfig.load(self.run_dir / "config.json")
        if saved.model != self.config.model:
            raise UserError(f"{self.run_dir} was trained with another model configuration; cannot resume")
        for name, opt, module in self._optimizers():
            load_into(module, tensors, name, weights)
            for i, p in enumerate(module.parameters()):
                key = f"optim.{name}.{i}"
                if key in tensors:
                    opt.state[p]["momentum_buffer"] = tensors[key].to(p.device)
        self.epoch, self.best_epoch = info["epoch"], info["best_epoch"]
        self.best_score, self.best_metrics, self.minutes = info["best_score"], info["best_metrics"], info["minutes"]
        for scheduler in (self.scheduler, self.meta_scheduler):
            if scheduler is not None:  # StepLR's closed form at the restored epoch
                scheduler.last_epoch = self.epoch
                for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = base * scheduler.gamma ** (self.epoch // scheduler.step_size)
        # Keep only the history rows of epochs that the restored state has seen.
        log = self.run_dir / "history.jsonl"
        if log.is_file() and self.ranks.main:
            rows = [r for r in log.read_text().splitlines() if json.loads(r)["epoch"] <= self.epoch]
            log.write_text("".join(r + "\n" for r in rows))
