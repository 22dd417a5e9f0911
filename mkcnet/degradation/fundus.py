"""Colour fundus families after Shen et al. 2020, "Modeling and enhancing low-quality
retinal fundus images" (IEEE TMI): light-transmission disturbance (global light, halo,
hole), image blurring, retinal artifacts, and combinations of them.

Every op acts inside the field of view (FOV) estimated from the input image and leaves the
pixels outside it untouched. Positions and sizes are in FOV radii (rho, phi around the FOV
centre), so a record describes the same physical disturbance at any resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mkcnet.degradation import ops
from mkcnet.degradation.base import Family, Params, register
from mkcnet.degradation.fov import Fov, estimate_fov
from mkcnet.degradation.spec import Spec, build_family, check_severity, sample_spec

WARM_GLARE = np.array([1.0, 0.93, 0.78], np.float32)  # colour of stray light in the camera


def _tint(img: np.ndarray) -> np.ndarray:
    return WARM_GLARE if img.shape[2] == 3 else np.ones(1, np.float32)


# --- ops -----------------------------------------------------------------------------------


def light(img: np.ndarray, fov: Fov, *, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Global light-transmission disturbance: exposure, contrast and colour saturation."""
    out = ops.contrast(np.clip(img * brightness, 0, 1), factor=contrast, mask=fov.mask)
    return ops.saturation(out, factor=saturation)


def halo(img: np.ndarray, fov: Fov, *, amplitude: float, ring_rho: float, width: float,
         phi: float, focus: float) -> np.ndarray:
    """Uneven illumination: a veiling-glare crescent near the FOV rim, strongest towards `phi`."""
    rho, ang = fov.polar
    ring = np.exp(-0.5 * ((rho - ring_rho) / width) ** 2)
    side = ((1.0 + np.cos(ang - phi)) / 2.0) ** focus
    g = (amplitude * ring * side)[..., None]
    return img + g * (_tint(img) - img)


def hole(img: np.ndarray, fov: Fov, *, depth: float, radius: float, rho: float, phi: float,
         softness: float) -> np.ndarray:
    """A dark region (small pupil, media opacity): multiplicative shadow with a soft edge."""
    x, y = fov.point(rho, phi)
    h, w = fov.mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(xx - x, yy - y) / fov.radius
    shadow = 1.0 / (1.0 + np.exp((dist - radius) / (softness * radius)))
    return img * (1.0 - depth * shadow)[..., None]


def blur(img: np.ndarray, fov: Fov, *, sigma_px: float) -> np.ndarray:
    """Defocus / cataract blur by normalised convolution, so the black surround does not bleed in."""
    m = fov.mask.astype(np.float32)[..., None]
    num = ops.gaussian_blur(img * m, sigma_px=sigma_px)
    den = ops.gaussian_blur(m, sigma_px=sigma_px)
    return num / np.maximum(den, 1e-6)


def spots(img: np.ndarray, fov: Fov, *, spots: list[dict[str, float]]) -> np.ndarray:
    """Retinal artifacts: soft bright (reflex) and dark (dust, lash) spots; they can mimic lesions."""
    h, w = fov.mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dark = np.zeros((h, w), np.float32)
    bright = np.zeros((h, w), np.float32)
    for s in spots:
        x, y = fov.point(s["rho"], s["phi"])
        d2 = ((xx - x) ** 2 + (yy - y) ** 2) / (s["radius"] * fov.radius) ** 2
        profile = s["amplitude"] * np.exp(-0.5 * d2 ** (s["power"] / 2))
        target = bright if s["bright"] else dark
        np.maximum(target, profile, out=target)
    out = img * (1.0 - dark)[..., None]
    return out + bright[..., None] * (_tint(img) - out)


# --- sampling: signed factors and geometry on top of the banded magnitudes -----------------


def _signed_light(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    """Magnitudes -> factors: mostly darker and flatter (under-exposed), sometimes the reverse."""
    b, c, s = params["brightness"], params["contrast"], params["saturation"]
    return {
        "brightness": round(1 - b if rng.random() < 0.7 else 1 + 1.2 * b, 6),
        "contrast": round(1 - c if rng.random() < 0.8 else 1 + 0.8 * c, 6),
        "saturation": round(1 - s if rng.random() < 0.6 else 1 + s, 6),
    }


def _halo_geometry(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    return {"ring_rho": round(float(rng.uniform(0.75, 1.0)), 4),
            "phi": round(float(rng.uniform(-np.pi, np.pi)), 4),
            "focus": round(float(rng.uniform(0.5, 3.0)), 3)}


def _hole_geometry(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    return {"rho": round(float(rng.uniform(0.0, 0.35)), 4),
            "phi": round(float(rng.uniform(-np.pi, np.pi)), 4),
            "softness": round(float(rng.uniform(0.2, 0.45)), 4)}


def _spot_geometry(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    """Place `count` spots inside the FOV, mixed sizes and polarity."""
    count, radius, amp = params.pop("count"), params.pop("radius"), params.pop("amplitude")
    return {"spots": [
        {"rho": round(float(0.9 * np.sqrt(rng.random())), 4),
         "phi": round(float(rng.uniform(-np.pi, np.pi)), 4),
         "radius": round(float(radius * rng.uniform(0.6, 1.4)), 5),
         "amplitude": round(float(amp * rng.uniform(0.7, 1.0)), 5),
         "power": round(float(rng.uniform(2.0, 5.0)), 3),
         "bright": bool(rng.random() < 0.4)}
        for _ in range(count)
    ]}


COMPONENTS: dict[str, Spec] = {  # spec.op(img, fov, **params)
    "light": Spec(light, "global brightness / contrast / saturation shift",
                          {"brightness": (0.04, 0.1, 0.18, 0.28, 0.4, 0.55),
                           "contrast": (0.05, 0.12, 0.2, 0.3, 0.42, 0.55),
                           "saturation": (0.05, 0.12, 0.2, 0.3, 0.42, 0.55)},
                          extras=(_signed_light,)),
    "halo": Spec(halo, "uneven illumination: glare crescent near the rim",
                        {"amplitude": (0.06, 0.12, 0.2, 0.3, 0.42, 0.55),
                         "width": (0.08, 0.1, 0.13, 0.16, 0.2, 0.25)},
                        extras=(_halo_geometry,)),
    "hole": Spec(hole, "dark central region (small pupil, opacity)",
                        {"depth": (0.15, 0.3, 0.45, 0.6, 0.72, 0.85),
                         "radius": (0.3, 0.35, 0.42, 0.5, 0.58, 0.68)},
                        extras=(_hole_geometry,)),
    "blur": Spec(blur, "Gaussian blur (defocus, cataract); ~15 px sigma at 512 px at most",
                        {"sigma_px": (0.6, 1.2, 2.0, 3.2, 5.0, 7.5)}, pixel_keys=frozenset({"sigma_px"})),
    "spots": Spec(spots, "bright and dark spots of varied radius that can look like lesions",
                          {"count": (1, 2, 4, 6, 9, 13), "radius": (0.015, 0.025, 0.035, 0.05, 0.07, 0.09),
                           "amplitude": (0.1, 0.18, 0.27, 0.37, 0.48, 0.6)},
                          integer_keys=frozenset({"count"}), extras=(_spot_geometry,)),
}


def _in_fov(steps: Callable[[np.ndarray, Fov], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run `steps` on the image and keep the original pixels outside its FOV."""

    def run(img: np.ndarray) -> np.ndarray:
        fov = estimate_fov(img)
        out = np.clip(steps(img, fov), 0.0, 1.0)
        return np.where(fov.mask[..., None], out, img).astype(np.float32)

    return run


for _name, _spec in COMPONENTS.items():
    build_family("fundus", _name, _spec,
                 apply=lambda img, params, op=_spec.op: _in_fov(lambda im, fov: op(im, fov, **params))(img))


# --- combinations --------------------------------------------------------------------------


def _sample_mixed(rng: np.random.Generator, severity: int, shape: tuple[int, ...]) -> Params:
    """Two (severity 1-2) or three (3-5) different component types, each at `severity`."""
    k = 2 if check_severity(severity) <= 2 else 3
    names = rng.choice(list(COMPONENTS), size=k, replace=False)
    return {"steps": [{"type": str(n), "params": sample_spec(COMPONENTS[n], rng, severity, shape)}
                      for n in names]}


def _apply_mixed(img: np.ndarray, params: Params) -> np.ndarray:
    def steps(im: np.ndarray, fov: Fov) -> np.ndarray:
        for step in params["steps"]:
            im = np.clip(COMPONENTS[step["type"]].op(im, fov, **step["params"]), 0.0, 1.0)
        return im

    return _in_fov(steps)(img)


register(Family(
    name="fundus.mixed", modality="fundus",
    summary="a combination of 2-3 of the types above, each at the given severity",
    sample_params=_sample_mixed, apply=_apply_mixed,
    scale=("2 types at severity 1", "2 types at severity 2", "3 types at severity 3",
           "3 types at severity 4", "3 types at severity 5"),
))
