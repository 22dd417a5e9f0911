"""Where things are (layout) and what the bare fundus looks like (reflectance, illumination).

A photograph is modelled as illumination x reflectance: the reflectance carries the
pigmented, textured choroid, the darker macula and fovea, and the pale optic disc and cup;
the illumination carries vignetting and uneven flash. Lengths are in pixels; sizes are drawn
relative to the FOV radius so every image size gives the same anatomy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit

from mkcnet.synth.canvas import smooth_noise

LIGHT_FUNDUS = np.array([0.97, 0.5, 0.26], np.float32)  # blond fundus, orange
DARK_FUNDUS = np.array([0.66, 0.22, 0.09], np.float32)  # pigmented fundus, brown-red


@dataclass(frozen=True)
class Layout:
    size: int
    cx: float
    cy: float
    radius: float  # FOV radius, px
    crop: float  # FOV cut at |y - cy| > crop * radius (camera mask), 1 = full circle
    temporal: int  # +1: the macula is to the right of the disc, -1: to the left
    disc_x: float
    disc_y: float
    disc_r: float
    disc_aspect: float  # vertical / horizontal
    cup_ratio: float
    fovea_x: float
    fovea_y: float

    def to_dict(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def rho(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        return np.hypot(np.asarray(x) - self.cx, np.asarray(y) - self.cy) / self.radius


def sample_layout(rng: np.random.Generator, size: int) -> Layout:
    r = size * rng.uniform(0.44, 0.5)
    cx, cy = size / 2 + rng.normal(0, 0.005 * size), size / 2 + rng.normal(0, 0.005 * size)
    temporal = int(rng.choice([-1, 1]))
    disc_x = cx - temporal * r * rng.uniform(0.42, 0.56)
    disc_y = cy + r * rng.uniform(-0.1, 0.04)
    return Layout(
        size=size, cx=cx, cy=cy, radius=r,
        crop=float(rng.uniform(0.82, 0.95)) if rng.random() < 0.3 else 1.0,
        temporal=temporal, disc_x=disc_x, disc_y=disc_y,
        disc_r=r * rng.uniform(0.1, 0.13), disc_aspect=rng.uniform(1.02, 1.15), cup_ratio=rng.uniform(0.25, 0.55),
        fovea_x=cx + temporal * r * rng.uniform(-0.04, 0.1), fovea_y=disc_y + r * rng.uniform(0.02, 0.1),
    )


def fov_alpha(lay: Layout) -> np.ndarray:
    """(S, S) anti-aliased field-of-view mask, with the optional top/bottom camera cut."""
    yy, xx = np.mgrid[0:lay.size, 0:lay.size].astype(np.float32) + 0.5
    inside = np.clip(lay.radius - np.hypot(xx - lay.cx, yy - lay.cy) + 0.5, 0, 1)
    cut = np.clip(lay.crop * lay.radius - np.abs(yy - lay.cy) + 0.5, 0, 1)
    return inside * cut


def reflectance(rng: np.random.Generator, lay: Layout) -> tuple[np.ndarray, dict[str, float]]:
    """(S, S, 3) fundus reflectance without vessels or lesions, and its parameters."""
    s, r = lay.size, lay.radius
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    pigment = float(rng.beta(2, 2))
    tess = float(0.5 * rng.beta(1.3, 3.0))  # tessellation: choroidal vessels seen through thin RPE
    base = (1 - pigment) * LIGHT_FUNDUS + pigment * DARK_FUNDUS
    base = base * np.array([1.0, rng.uniform(0.9, 1.12), rng.uniform(0.8, 1.25)], np.float32)

    lum = 1 + 0.05 * smooth_noise(rng, s, 5) + 0.025 * smooth_noise(rng, s, 24)
    refl = base * lum[..., None]
    refl[..., 1] *= 1 + 0.06 * smooth_noise(rng, s, 6)  # patchy red-orange hue

    choroid = smooth_noise(rng, s, 11) + 0.35 * smooth_noise(rng, s, 30)
    stripes = np.exp(-(choroid / 0.45) ** 2)  # bright network where the noise crosses zero
    refl *= 1 - tess * 0.4 * (1 - stripes)[..., None] * np.array([0.55, 0.8, 0.75], np.float32)
    refl *= 1 + 0.02 * smooth_noise(rng, s, 90)[..., None]  # fine grain of the RPE

    d_f = np.hypot(xx - lay.fovea_x, yy - lay.fovea_y) / r
    macula = float(rng.uniform(0.25, 0.45))
    refl *= 1 - macula * np.exp(-(d_f / 0.24) ** 2)[..., None] * np.array([0.55, 0.95, 1.0], np.float32)
    refl *= 1 - float(rng.uniform(0.15, 0.35)) * np.exp(-(d_f / 0.045) ** 2)[..., None]
    if rng.random() < 0.5:  # foveal light reflex
        refl += 0.12 * np.exp(-(d_f / 0.01) ** 2)[..., None]

    dx, dy = xx - lay.disc_x, (yy - lay.disc_y) / lay.disc_aspect
    d_disc = np.hypot(dx, dy) / lay.disc_r
    peri = np.exp(-np.clip(d_disc - 1, 0, None) / 0.6) * 0.12  # pale peripapillary zone
    refl *= (1 + peri)[..., None]
    disc = expit((1 - d_disc) / 0.07)
    disc_colour = np.array([1.0, 0.8, 0.55], np.float32) * (1 + 0.08 * (lay.temporal * dx / lay.disc_r))[..., None]
    refl = refl * (1 - disc[..., None]) + disc_colour * disc[..., None]
    cup_x = lay.disc_x + lay.temporal * 0.25 * lay.disc_r * (1 - lay.cup_ratio)
    d_cup = np.hypot(xx - cup_x, (yy - lay.disc_y) / lay.disc_aspect) / (lay.cup_ratio * lay.disc_r)
    cup = expit((1 - d_cup) / 0.25)
    refl = refl * (1 - cup[..., None]) + np.array([1.0, 0.93, 0.8], np.float32) * cup[..., None]
    return refl.astype(np.float32), {"pigment": round(pigment, 3), "tessellation": round(tess, 3),
                                     "macular_pigment": round(macula, 3)}


def illumination(rng: np.random.Generator, lay: Layout) -> tuple[np.ndarray, dict[str, float]]:
    """(S, S) flash illumination: a bright centre falling off towards the rim, slightly uneven."""
    s = lay.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    ox, oy = rng.normal(0, 0.08, size=2) * lay.radius
    rho = np.hypot(xx - lay.cx - ox, yy - lay.cy - oy) / lay.radius
    vignette, power, gain = float(rng.uniform(0.25, 0.55)), float(rng.uniform(2.0, 3.5)), float(rng.uniform(0.9, 1.15))
    light = gain * (1 - vignette * np.clip(rho, 0, 1.2) ** power) * (1 + 0.04 * smooth_noise(rng, s, 3))
    return light.astype(np.float32), {"vignetting": round(vignette, 3), "exposure": round(gain, 3)}
