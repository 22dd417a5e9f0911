"""A drawn chest radiograph: lungs, heart, spine, ribs and clavicles as shapes, blurred, with noise.

Real X-rays may not be committed; this stands in for them where a test needs an image of the
other chest modality (the real measurement, on 500 pediatric X-rays, is docs/ood_guard.csv). It is
grey and square, so the CT model's input checks pass it: only the feature score can flag it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def drawn_chest_xray(size: int = 512, seed: int = 0) -> np.ndarray:
    """uint8 H×W greyscale, projection-radiograph contrast (bone bright, air-filled lungs dark)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.04)
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.58) / 0.52) ** 2 < 1
    image[body] = 0.5
    for centre in (0.32, 0.68):
        image[((x - centre) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1] = 0.18  # lungs
    image[((x - 0.45) / 0.14) ** 2 + ((y - 0.62) / 0.13) ** 2 < 1] = 0.55  # heart
    image[(abs(x - 0.5) < 0.035) & (y > 0.15)] = 0.72  # spine
    for k in range(8):
        rib = abs(y - (0.25 + 0.065 * k + 0.3 * (x - 0.5) ** 2)) < 0.012
        image[rib & (abs(x - 0.5) > 0.04) & (abs(x - 0.5) < 0.33) & body] += 0.22
    image[(abs(y - 0.2 - 0.15 * abs(x - 0.5)) < 0.012) & (abs(x - 0.5) < 0.3)] += 0.25  # clavicles
    image += ndimage.gaussian_filter(rng.normal(0, 0.08, image.shape), 2)
    return (np.clip(ndimage.gaussian_filter(image, 1.5), 0, 1) * 255).astype(np.uint8)
