"""Quality shift: draw image sets with a chosen share r of low-quality (LQ) images.

Used on both sides of the robustness experiment: `train_lq_ratio` subsamples the training
split to a share r (keeping as many images as that share allows), and `mkcnet ood` resamples
the evaluation set to a fixed size at each r. LQ / HQ are as in `mkcnet.metrics.quality_groups`;
images of unknown quality belong to neither group and are never drawn.
"""

from __future__ import annotations

import numpy as np

from mkcnet.errors import UserError
from mkcnet.metrics import quality_groups


def split_sizes(ratio: float, size: int) -> tuple[int, int]:
    """(LQ, HQ) image counts of a draw of `size` images with a share `ratio` of LQ."""
    if not 0 <= ratio <= 1:
        raise UserError(f"the LQ ratio must be within 0..1, got {ratio}")
    n_lq = int(round(ratio * size))
    return n_lq, size - n_lq


def largest_size(ratio: float, n_lq: int, n_hq: int) -> int:
    """The most images a draw at this ratio can hold without drawing an image twice."""
    fits = lambda size: all(want <= have for want, have in zip(split_sizes(ratio, size), (n_lq, n_hq)))  # noqa: E731
    return next(size for size in range(n_lq + n_hq, -1, -1) if fits(size))


def draw_mix(lq: np.ndarray, hq: np.ndarray, ratio: float, size: int, rng: np.random.Generator,
             replace: bool = False) -> np.ndarray:
    """Indices of `size` images, round(ratio·size) of them from `lq`. A group with fewer images
    than it must give is drawn with replacement (whatever `replace` says)."""
    parts = []
    for pool, count in zip((lq, hq), split_sizes(ratio, size)):
        if count and not len(pool):
            raise UserError(f"cannot draw {count} {'LQ' if pool is lq else 'HQ'} image(s): the set has none")
        parts.append(rng.choice(pool, count, replace=replace or count > len(pool)))
    return np.concatenate(parts)


def lq_subset(quality: np.ndarray, num_quality: int, ratio: float, seed: int = 0) -> np.ndarray:
    """Sorted row indices of the largest subset with a share `ratio` of LQ images (no repeats),
    the same for the same seed."""
    lq, hq = quality_groups(quality, num_quality)
    size = largest_size(ratio, len(lq), len(hq))
    if size == 0:
        raise UserError(f"no subset with an LQ share of {ratio}: the split has {len(lq)} LQ and {len(hq)} HQ images")
    return np.sort(draw_mix(lq, hq, ratio, size, np.random.default_rng(seed)))
