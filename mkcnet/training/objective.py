"""The Task Net's objective, shared by Stage I, the pseudo step and the meta objective."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from mkcnet.data.dataset import Batch
from mkcnet.losses import auxiliary_loss, focal_loss
from mkcnet.models import TaskOutput


@dataclass
class LossParts:
    diagnosis: torch.Tensor
    quality: torch.Tensor | None = None
    auxiliary: torch.Tensor | None = None

    @property
    def primary(self) -> torch.Tensor:
        """L_d + L_q: what the meta learner is trained to improve."""
        return self.diagnosis if self.quality is None else self.diagnosis + self.quality

    @property
    def total(self) -> torch.Tensor:
        """L_d + L_q + L_ω: what Stage I minimises."""
        return self.primary if self.auxiliary is None else self.primary + self.auxiliary

    def mix(self, other: LossParts, lam: float) -> LossParts:
        """λ·self + (1−λ)·other, part by part: mixup's loss for the two label sets of a mixed batch."""
        def blend(a, b):
            return b if a is None else a if b is None else lam * a + (1 - lam) * b
        return LossParts(*(blend(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))


def task_losses(out: TaskOutput, batch: Batch, aux_labels: torch.Tensor | None, gamma: float,
                meta_length: int) -> LossParts:
    parts = LossParts(diagnosis=focal_loss(out.diagnosis, batch.diagnosis, gamma))
    if out.quality is not None:
        known = batch.quality >= 0  # diagnosis-only rows carry quality -1
        if known.any():
            parts.quality = focal_loss(out.quality[known], batch.quality[known], gamma)
    if out.auxiliary is not None and aux_labels is not None:
        parts.auxiliary = auxiliary_loss(out.auxiliary, aux_labels, meta_length, gamma)
    return parts
