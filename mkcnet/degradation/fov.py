"""Field of view (FOV) of a fundus photograph: the bright disc inside the black surround.

Fundus degradations act only inside it, so pixels outside stay byte-identical. The FOV is
estimated from the image itself (no stored mask needed) by thresholding the red channel
(luminance for grey images) relative to its bright end, then cleaning up the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Fov:
    mask: np.ndarray  # (H, W) bool
    cx: float
    cy: float
    radius: float  # px; half the larger bounding-box side, so cut-off circles still fit

    @cached_property
    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """(rho, phi): distance from the centre in FOV radii, and angle in radians."""
        h, w = self.mask.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - self.cx, yy - self.cy
        return np.hypot(dx, dy) / self.radius, np.arctan2(dy, dx)

    def point(self, rho: float, phi: float) -> tuple[float, float]:
        """Pixel (x, y) of a FOV-polar position."""
        return self.cx + rho * self.radius * np.cos(phi), self.cy + rho * self.radius * np.sin(phi)


def estimate_fov(img: np.ndarray, rel_threshold: float = 0.12, min_threshold: float = 0.02) -> Fov:
    """FOV of a float01 (H, W, C) image; the whole frame when no dark surround is found."""
    chan = img[..., 0]  # red for RGB fundus photographs, the grey level otherwise
    thr = max(min_threshold, rel_threshold * float(np.percentile(chan, 99)))
    # opening that does not eat into a FOV touching the frame: erode as if it continued outside
    mask = ndimage.binary_erosion(chan > thr, iterations=2, border_value=1)
    mask = ndimage.binary_dilation(mask, iterations=2) & (chan > thr)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_fill_holes(mask)
    if mask.mean() < 0.05:  # not a fundus photograph (or a black one): act everywhere
        mask = np.ones(chan.shape, bool)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    radius = max(rows[-1] - rows[0], cols[-1] - cols[0]) / 2 + 0.5
    return Fov(mask=mask, cx=float(cx), cy=float(cy), radius=float(radius))
