"""X-ray and CT families, after MedMNIST-C (Di Salvo et al. 2024): noise, blur, intensity,
coding and resolution corruptions, plus the CT reconstruction artefacts (streaks, rings).

X-ray and CT share one table; CT adds two families. Band edges are for a float image in
[0, 1] and, for pixel sizes, a 256 px image.
"""

from __future__ import annotations

import numpy as np

from mkcnet.degradation import ops
from mkcnet.degradation.base import Params
from mkcnet.degradation.spec import Spec, any_angle, build_family, either_direction, noise_seed

PX = frozenset({"sigma_px", "length_px", "width_px"})

SHARED: dict[str, Spec] = {
    "gaussian_noise": Spec(ops.gaussian_noise, "additive Gaussian (electronic) noise",
                           {"sigma": (0.01, 0.03, 0.05, 0.08, 0.12, 0.18)}, extras=(noise_seed,)),
    "speckle_noise": Spec(ops.speckle_noise, "multiplicative noise, strongest in bright tissue",
                          {"sigma": (0.05, 0.12, 0.2, 0.3, 0.42, 0.6)}, extras=(noise_seed,)),
    "impulse_noise": Spec(ops.impulse_noise, "salt-and-pepper: dead and hot pixels",
                          {"amount": (0.002, 0.01, 0.025, 0.05, 0.09, 0.15)}, extras=(noise_seed,)),
    "shot_noise": Spec(ops.shot_noise, "Poisson quantum noise of a low-dose exposure",
                       {"photons": (150, 80, 40, 20, 10, 5)}, extras=(noise_seed,)),
    "gaussian_blur": Spec(ops.gaussian_blur, "unsharp focal spot / detector blur",
                          {"sigma_px": (0.5, 1.0, 1.7, 2.5, 3.7, 5.5)}, pixel_keys=PX),
    "motion_blur": Spec(ops.motion_blur, "patient motion during the exposure",
                        {"length_px": (2, 4, 7, 11, 16, 24)}, pixel_keys=PX, extras=(any_angle,)),
    "brightness_up": Spec(ops.brightness, "over-exposure",
                          {"delta": (0.03, 0.08, 0.15, 0.23, 0.32, 0.42)}),
    "brightness_down": Spec(ops.brightness, "under-exposure",
                            {"delta": (-0.03, -0.08, -0.15, -0.23, -0.32, -0.42)}),
    "contrast_up": Spec(ops.contrast, "over-stretched window",
                        {"factor": (1.1, 1.3, 1.55, 1.85, 2.2, 2.7)}),
    "contrast_down": Spec(ops.contrast, "flat, washed-out window",
                          {"factor": (0.9, 0.75, 0.6, 0.45, 0.32, 0.2)}),
    "gamma": Spec(ops.gamma, "wrong display curve, darker or brighter at random (gamma or 1/gamma)",
                  {"gamma": (1.1, 1.3, 1.6, 2.0, 2.5, 3.2)}, extras=(either_direction("gamma"),)),
    "jpeg": Spec(ops.jpeg, "lossy JPEG compression (blocking, ringing)",
                 {"quality": (40, 25, 16, 10, 6, 2)}, integer_keys=frozenset({"quality"})),
    "pixelate": Spec(ops.pixelate, "low-resolution acquisition, upsampled",
                     {"factor": (1.25, 1.6, 2.2, 3.0, 4.0, 5.5)}),
}


def _lines_through_a_point(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    """Streak geometry: `count` lines at random angles through one dense point, random signs."""
    count = int(params.pop("count"))
    amp = params.pop("amplitude")
    return {
        "centre": [round(float(v), 4) for v in rng.uniform(0.3, 0.7, size=2)],
        "angles_deg": [round(float(a), 3) for a in rng.uniform(0, 180, size=count)],
        "amplitudes": [round(float(amp * s * rng.uniform(0.6, 1.0)), 5) for s in rng.choice([-1, 1], size=count)],
    }


def _concentric_rings(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    """Ring geometry: `count` radii around a centre near the middle, random signs."""
    count = int(params.pop("count"))
    amp = params.pop("amplitude")
    side = min(shape[0], shape[1])
    return {
        "centre": [round(float(v), 4) for v in rng.uniform(0.45, 0.55, size=2)],
        "radii_px": sorted(round(float(r), 2) for r in rng.uniform(0.05, 0.48, size=count) * side),
        "amplitudes": [round(float(amp * s * rng.uniform(0.6, 1.0)), 5) for s in rng.choice([-1, 1], size=count)],
    }


CT_ONLY: dict[str, Spec] = {
    "streak": Spec(ops.streak, "metal / beam-hardening streaks through a dense point",
                   {"count": (2, 4, 6, 9, 12, 16), "amplitude": (0.03, 0.07, 0.12, 0.18, 0.26, 0.35),
                    "width_px": (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)},
                   pixel_keys=PX, integer_keys=frozenset({"count"}), extras=(_lines_through_a_point,)),
    "ring": Spec(ops.ring, "detector-calibration rings around the rotation centre",
                 {"count": (2, 4, 6, 9, 12, 16), "amplitude": (0.02, 0.04, 0.07, 0.1, 0.14, 0.2),
                  "width_px": (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)},
                 pixel_keys=PX, integer_keys=frozenset({"count"}), extras=(_concentric_rings,)),
}

for _modality in ("xray", "ct"):
    for _name, _spec in SHARED.items():
        build_family(_modality, _name, _spec)
for _name, _spec in CT_ONLY.items():
    build_family("ct", _name, _spec)
