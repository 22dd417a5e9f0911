"""The training loop: Stage I / Stage II per epoch, validation, run directory, resume.

Run directory layout:
    config.json                 the resolved RunConfig
    history.jsonl, history.csv  one row per epoch (losses, validation metrics, minutes)
    best.safetensors/.json      the epoch with the best validation diagnosis AUC
    last.safetensors/.json      the latest epoch
    state.safetensors           weights, optimiser state and counters for --resume (one atomic file)
    .lock                       held by the run's process while it runs (mkcnet/run_lock.py)

Every file is replaced atomically (written, fsynced, renamed) or appended with fsync, so a kill at
any moment leaves a folder that `--resume` continues bit for bit; a full or read-only disk ends the
run with one line naming the last good checkpoint, which stays intact.
"""

from __future__ import annotations

import contextlib
import errno
import functools
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
from safetensors.torch import load_file
from torch.func import functional_call
from tqdm.auto import tqdm

from mkcnet.checkpoint import load_into, save_checkpoint, write_safetensors
from mkcnet.config import TRAIN_WORDS, RunConfig
from mkcnet.data.dataset import Batch, ImageSet
from mkcnet.data.shift import lq_subset
from mkcnet.device import autocast, memory_format, resolve_device
from mkcnet.errors import UserError
from mkcnet.files import append_line, atomic_write, read_jsonl, remove_temporaries, write_failure
from mkcnet.inference.predict import predict_batches
from mkcnet.methods import get_method
from mkcnet.metrics import evaluation_metrics
from mkcnet.models import build_networks
from mkcnet.models.meta_learner import RandomLabels, mask_labels
from mkcnet.models.task_net import TaskOutput
from mkcnet.run_lock import hold_run
from mkcnet.training import distributed
from mkcnet.training.distributed import Ranks
from mkcnet.training.gradients import gradient_cosines
from mkcnet.training.label_stats import head_mutual_information, meta_label_stats
from mkcnet.training.meta_step import (
    PseudoStep,
    aligned_meta_gradients,
    apply_meta_gradients,
    meta_gradients,
    top_stage,
)
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


def _record_input(store: list, module, args) -> None:
    store.append(args[0])


def check_train_config(tc) -> None:
    """The settings spelled as words, checked before anything runs."""
    for name, allowed in TRAIN_WORDS.items():
        if (value := getattr(tc, name)) not in allowed:
            raise UserError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
    if tc.val_every < 1 or tc.meta_every < 1:
        raise UserError("val_every and meta_every must be 1 or more")


def meta_optimizer(meta: torch.nn.Module, tc) -> torch.optim.Optimizer:
    """φ's optimiser. SGD as the official code; Adam divides each step by the gradient's running
    scale, so φ moves at `meta_lr` however small the meta term's raw gradient is (see RESULTS.md)."""
    if tc.meta_optimizer == "sgd":
        return torch.optim.SGD(meta.parameters(), lr=tc.meta_lr, momentum=tc.momentum, weight_decay=tc.meta_weight_decay)
    return torch.optim.Adam(meta.parameters(), lr=tc.meta_lr, weight_decay=tc.meta_weight_decay)


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
        check_train_config(tc)
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
            self.meta_optimizer = meta_optimizer(self.meta, tc)
            self.meta_scheduler = torch.optim.lr_scheduler.StepLR(self.meta_optimizer, tc.step_size, tc.lr_gamma)
        self.epoch = 0
        self.meta_updates = 0  # φ updates so far, over the whole run
        self.best_epoch, self.best_score, self.best_metrics = -1, -math.inf, {}
        self.minutes = 0.0
        self.saved_epoch = 0  # the epoch that state.safetensors holds (what --resume would continue)

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
        """One epoch. On every batch Stage I updates θ; on every `meta_every`-th batch Stage II first
        updates φ on the same batch, through the pseudo step that Stage I's update is about to take
        (the same labels, batch, gradients and optimiser state: θ̃ is that update, exactly, for the
        parameters the pseudo step covers). One φ forward serves both stages."""
        tc = self.config.train
        generator = torch.Generator().manual_seed(tc.seed * 100_003 + self.epoch)
        self.task_net.train()
        if self.meta is not None:
            self.meta.train()
        phi_before = self._phi_vector()
        sums: dict[str, float] = {}
        meta_sums: dict[str, float] = {}
        steps = n_meta = 0
        bar = tqdm(data.batches(tc.batch_size, shuffle=True, augment=tc.augment == "flip-shift", generator=generator,
                                drop_singleton=True, shard=self.ranks.shard),
                   total=math.ceil(len(data) / tc.batch_size), desc=f"epoch {self.epoch + 1}/{tc.epochs}",
                   disable=not self.progress, leave=False)
        for batch in bar:
            batch = self._to_device(batch)
            meta_due = self.meta is not None and steps % tc.meta_every == 0
            logits = labels = None
            if meta_due:  # φ's outputs with their graph: Stage II differentiates them, Stage I reads them detached
                logits = self.meta(batch.images)
                labels = mask_labels(self.config.model, logits.detach(), batch.diagnosis, batch.quality)
            partner = None
            if self.method.mixup:
                batch, partner, lam = mix_batch(batch, self.method.mixup, generator)
            held: list[torch.Tensor] = []  # scope "top": the last stage's input, recorded by Stage I's forward
            hook = (top_stage(self.task_net)[1].register_forward_pre_hook(functools.partial(_record_input, held))
                    if meta_due and tc.meta_scope == "top" else None)
            with autocast(self.device, self.amp):
                out = self.stage_one_net(batch.images)
            if hook is not None:
                hook.remove()
            with autocast(self.device, self.amp):
                targets = labels.float() if labels is not None else self.aux_targets(batch)
                parts = task_losses(out, batch, targets, tc.focal_gamma, self.config.model.meta_length)
                if partner is not None:
                    parts = parts.mix(self.losses(out, partner), lam)
            if meta_due:
                stats = self._stage_two(batch, logits, out, parts, held)
                n_meta += 1
                for k, v in stats.items():
                    meta_sums[k] = meta_sums.get(k, 0.0) + v
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
        if self.meta is not None:
            self.meta_updates += n_meta
            stats |= self.ranks.mean_stats({k: v / max(n_meta, 1) for k, v in meta_sums.items()})
            stats["meta_updates"] = self.meta_updates
            stats["phi_step"] = float((self._phi_vector() - phi_before).norm() / phi_before.norm())
        return stats

    def _stage_two(self, batch: Batch, logits: torch.Tensor, out: TaskOutput, parts: LossParts,
                   held: list[torch.Tensor]) -> dict[str, float]:
        """Update φ on this batch before Stage I's step is taken (θ and its optimiser untouched).

        In fp32 whatever Stage I uses: the first-order steps are finite differences of forwards at
        ε‖v‖ = 0.01, which bf16 rounding swamps (cosine with the exact gradient 0.55 under bf16
        autocast, 0.99 in fp32)."""
        tc = self.config.train
        outer_weight = tc.meta_outer_weight if tc.meta_outer else 0.0
        if tc.meta_outer_schedule == "lr":
            outer_weight *= tc.lr / self.optimizer.param_groups[0]["lr"]
        with distributed.batch_norm_group(self.task_net, self.local_group):
            if tc.meta_step == "aligned":
                auxiliary = out.auxiliary
                if self.amp:  # Stage I's logits are bf16: the finite difference needs fp32 ones
                    with torch.no_grad():
                        buffers = {n: b.clone() for n, b in self.task_net.named_buffers()}
                        auxiliary = functional_call(self.task_net, (dict(self.task_net.named_parameters()), buffers),
                                                    (batch.images,)).auxiliary
                grads, stats = aligned_meta_gradients(self.task_net, self.meta, batch, logits, parts.primary,
                                                      auxiliary.float(), self.optimizer.param_groups[0]["lr"],
                                                      tc.entropy_weight, tc.focal_gamma, ranks=self.ranks,
                                                      outer_weight=outer_weight)
            else:
                grads, stats = meta_gradients(self.task_net, self.meta, batch, PseudoStep.of(self.optimizer, self.task_net),
                                              tc.entropy_weight, tc.focal_gamma, tc.second_order, tc.meta_scope,
                                              logits=logits, features=self._held_features(out, held), ranks=self.ranks,
                                              outer_weight=outer_weight)
        apply_meta_gradients(self.meta, self.meta_optimizer, grads)
        return stats

    def _held_features(self, out: TaskOutput, held: list[torch.Tensor]) -> torch.Tensor | None:
        """What Stage II's pseudo step holds fixed, taken from Stage I's forward (in fp32)."""
        scope = self.config.train.meta_scope
        if scope == "heads":
            return out.maps["backbone"].float()
        if scope == "top":
            return held[0].float()
        return None

    def _phi_vector(self) -> torch.Tensor | None:
        if self.meta is None:
            return None
        return torch.cat([p.detach().flatten().float().cpu() for p in self.meta.parameters()])

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
                                  self.config.model.num_quality) | self._label_stats(data, preds)

    def _label_stats(self, data: ImageSet, preds) -> dict[str, float]:
        """What φ's labels carry inside each block (`aux_mi`, label_stats.py), and how much of it the
        Task Net's ω head reproduces (`aux_head_mi`), on these images."""
        stats = {}
        known = data.table.quality >= 0
        if self.meta is not None and self.method.mask_uses_quality and known.all():
            stats |= meta_label_stats(self.meta, data.batches(self.config.train.batch_size * 2), self.device)
        if preds.auxiliary is not None and known.any():
            stats["aux_head_mi"] = head_mutual_information(preds.auxiliary, data.table.diagnosis,
                                                           data.table.quality, self.config.model)
        return stats

    # -- the run ---------------------------------------------------------------------------
    def fit(self, train: ImageSet, val: ImageSet | None = None, resume: bool = False) -> FitResult:
        """Train to `epochs`, from scratch or (`resume`) from the folder's state file. Rank 0 holds
        the run folder's lock throughout: a second writer is refused with one line."""
        with hold_run(self.run_dir) if self.ranks.main else contextlib.nullcontext():
            try:
                return self._fit(train, val, resume)
            except OSError as err:
                failure = write_failure(err, self.run_dir)
                if failure is None:
                    raise
                remedy = "free space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
                if self.saved_epoch:
                    raise UserError(f"{failure}: the last good checkpoint is epoch {self.saved_epoch}; {remedy} "
                                    "and resume with --resume") from None
                raise UserError(f"{failure}: no epoch was saved yet; {remedy} and start again") from None

    def _fit(self, train: ImageSet, val: ImageSet | None, resume: bool) -> FitResult:
        tc = self.config.train
        if tc.train_lq_ratio is not None:  # training-side quality shift: the split resampled to that LQ share
            train = train.subset(lq_subset(train.table.quality, self.config.model.num_quality, tc.train_lq_ratio,
                                           tc.seed))
        self._check_labels(train)
        if len(train) < 2:
            raise UserError(f"the training split holds {len(train)} image(s): training needs 2 or more (BatchNorm "
                            "cannot normalise a batch of one)")
        if self.method.aux_labels == "random":
            self.random_labels = RandomLabels(self.config.model, len(train), tc.seed)
        # One fixed, unaugmented batch on which the gradient cosines are measured every epoch.
        probe = next(train.batches(tc.batch_size, shuffle=True, generator=torch.Generator().manual_seed(tc.seed)))
        main = self.ranks.main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(self.run_dir, exclusive=True)  # a killed writer's; this process holds the lock
        self.ranks.barrier()  # the others read the state file only after rank 0 has tidied the folder
        if resume:
            self._load_state()
        elif main:  # a fresh start: a kill before its first epoch must not leave an older run to resume
            for stale in ("history.jsonl", "history.csv", STATE_FILE):
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
        tc = self.config.train
        # Validation (and so the choice of the best epoch) every `val_every` epochs, and the last.
        due = self.epoch % max(tc.val_every, 1) == 0 or self.epoch == tc.epochs
        metrics = self.validate(val) if val is not None and due else {}
        self.minutes += (time.perf_counter() - start) / 60
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], "minutes": self.minutes,
               "train.n": len(train), "ranks": self.ranks.world_size, **stats,
               **{f"val.{k}": v for k, v in metrics.items()}}
        self._log(row)
        info = {"epoch": self.epoch, "metrics": metrics, "minutes": self.minutes}
        if val is None:
            score = -stats["loss.total"]
        else:
            score = metrics.get(f"diagnosis.{tc.select}", math.nan) if due else None
            if score is not None and np.isnan(score):
                score = -math.inf
        if score is not None and (score > self.best_score or self.best_epoch < 0):
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
        append_line(self.run_dir / "history.jsonl", json.dumps(row, default=float))
        rows = read_jsonl(self.run_dir / "history.jsonl")
        atomic_write(self.run_dir / "history.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))
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
                for key, value in opt.state.get(p, {}).items():  # SGD's momentum buffer; Adam's moments and step
                    if torch.is_tensor(value):
                        tensors[f"optim.{name}.{i}.{key}"] = value.detach().cpu().contiguous()
        info = {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "best_metrics": self.best_metrics, "minutes": self.minutes, "meta_updates": self.meta_updates}
        write_safetensors(self.run_dir / STATE_FILE, tensors, {STATE_KEY: json.dumps(info, default=float)})
        self.saved_epoch = self.epoch

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
        try:
            saved = RunConfig.load(self.run_dir / "config.json")
        except (OSError, ValueError) as err:  # a missing or damaged config (JSONDecodeError is a ValueError)
            raise UserError(f"config.json in {self.run_dir} cannot be read ({type(err).__name__}); start over with "
                            "--overwrite (the last finished epoch's weights are in last.safetensors)") from None
        if not saved.model.same_network(self.config.model):
            raise UserError(f"{self.run_dir} was trained with another model configuration; cannot resume")
        for name, opt, module in self._optimizers():
            load_into(module, tensors, name, weights)
            for i, p in enumerate(module.parameters()):
                if f"optim.{name}.{i}" in tensors:  # state files written before every state key was saved
                    opt.state[p]["momentum_buffer"] = tensors[f"optim.{name}.{i}"].to(p.device, copy=True)
                prefix = f"optim.{name}.{i}."
                for key in (k for k in tensors if k.startswith(prefix)):
                    # A copy: load_file's tensors map the file, and a mapping would keep the replaced
                    # state's disk space in use for the rest of the run.
                    value = tensors[key].clone()
                    opt.state[p][key[len(prefix):]] = value if key.endswith(".step") else value.to(p.device)
        self.epoch, self.best_epoch = info["epoch"], info["best_epoch"]
        self.best_score, self.best_metrics, self.minutes = info["best_score"], info["best_metrics"], info["minutes"]
        self.meta_updates = info.get("meta_updates", 0)
        self.saved_epoch = self.epoch
        for scheduler in (self.scheduler, self.meta_scheduler):
            if scheduler is not None:  # StepLR's closed form at the restored epoch
                scheduler.last_epoch = self.epoch
                for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = base * scheduler.gamma ** (self.epoch // scheduler.step_size)
        # Keep only the history rows of epochs that the restored state has seen.
        log = self.run_dir / "history.jsonl"
        if log.is_file() and self.ranks.main:
            rows = [r for r in read_jsonl(log) if r.get("epoch", math.inf) <= self.epoch]
            atomic_write(log, lambda p: p.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows)))
