"""OCT / OCTA families: speckle, defocus and motion blur, contrast (signal) loss."""

from __future__ import annotations

import numpy as np

from mkcnet.degradation import ops
from mkcnet.degradation.base import Params
from mkcnet.degradation.spec import Spec, build_family, noise_seed


def _axial_or_lateral(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    """OCT motion is along the A-scan (vertical) or across B-scans (horizontal), give or take."""
    base = 90.0 if rng.random() < 0.5 else 0.0
    return {"angle_deg": round(base + float(rng.uniform(-15, 15)), 3)}


SPECS: dict[str, Spec] = {
    "speckle": Spec(ops.gamma_speckle, "coherent speckle: unit-mean Gamma noise, fewer looks = grainier",
                    {"looks": (20, 10, 5, 3, 2, 1.2)}, extras=(noise_seed,)),
    "defocus": Spec(ops.defocus_blur, "defocused sample arm: pillbox blur",
                    {"radius_px": (0.7, 1.3, 2.0, 3.0, 4.3, 6.0)}, pixel_keys=frozenset({"radius_px"})),
    "motion_blur": Spec(ops.motion_blur, "eye motion during the scan, axial or lateral",
                        {"length_px": (2, 4, 7, 11, 16, 24)}, pixel_keys=frozenset({"length_px"}),
                        extras=(_axial_or_lateral,)),
    "contrast_loss": Spec(ops.contrast_loss, "weak signal (media opacity): flat contrast over a raised floor",
                          {"factor": (0.9, 0.75, 0.6, 0.45, 0.32, 0.2),
                           "floor": (0.02, 0.05, 0.09, 0.14, 0.2, 0.27)}),
}

for _name, _spec in SPECS.items():
    build_family("oct", _name, _spec)
