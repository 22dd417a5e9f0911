"""Mixup (Zhang et al., 2018) for Stage I: the `mixup` baseline's augmentation.

A batch becomes λ·x + (1−λ)·x[π]; its loss is λ·L(y) + (1−λ)·L(y[π]) (`LossParts.mix`), which
for the focal loss equals the loss against the mixed soft target.
"""

from __future__ import annotations

import numpy as np
import torch

from mkcnet.data.dataset import Batch


def mix_batch(batch: Batch, alpha: float, generator: torch.Generator | None = None) -> tuple[Batch, Batch, float]:
    """(mixed images with the batch's labels, the same images with the partners' labels, λ)."""
    # λ from the run's own generator, so a resumed run draws what an uninterrupted one would
    # (torch's Beta sampler takes no generator: numpy's, seeded from it, does the draw).
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(batch.images), generator=generator).to(batch.images.device)
    images = lam * batch.images + (1 - lam) * batch.images[perm]
    mixed = Batch(images, batch.diagnosis, batch.quality, batch.index)
    partner = Batch(images, batch.diagnosis[perm], batch.quality[perm], batch.index[perm.cpu()])
    return mixed, partner, lam
