"""One synthetic colour fundus photograph, deterministic by seed.

image = illumination x reflectance, where the reflectance is the textured background with
disc and macula (anatomy), darkened by the vessel tree and by red lesions, and blended with
bright lesions; then camera optics (slight blur), sensor noise and the field-of-view mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from mkcnet.synth.anatomy import fov_alpha, illumination, reflectance, sample_layout
from mkcnet.synth.lesions import draw_lesions
from mkcnet.synth.vessels import draw_tree, grow_tree

GENERATOR_VERSION = 1
DIAGNOSES = ("NoDR", "NPDR", "PDR")

# per-channel transmission (multiply) or target colour (blend) of each layer
ARTERY = np.array([0.88, 0.6, 0.6], np.float32)
VEIN = np.array([0.68, 0.34, 0.42], np.float32)
NEW_VESSELS = np.array([0.68, 0.34, 0.45], np.float32)
HAEMORRHAGE = np.array([0.62, 0.3, 0.36], np.float32)
REFLEX = np.array([0.14, 0.12, 0.1], np.float32)
EXUDATE = np.array([0.98, 0.86, 0.45], np.float32)
COTTON_WOOL = np.array([0.95, 0.88, 0.78], np.float32)
PRERETINAL = np.array([0.42, 0.07, 0.05], np.float32)
SCAR = np.array([0.5, 0.28, 0.1], np.float32)


def _absorb(img: np.ndarray, cover: np.ndarray | None, transmission: np.ndarray) -> np.ndarray:
    return img if cover is None else img * (1 - cover[..., None] * (1 - transmission))


def _blend(img: np.ndarray, cover: np.ndarray | None, colour: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    return img if cover is None else img + opacity * cover[..., None] * (colour - img)


def generate_fundus(seed: int, size: int = 256, diagnosis: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """A clean (good-quality) fundus image as float32 (size, size, 3) in [0, 1], and its record."""
    if diagnosis not in (0, 1, 2):
        raise ValueError(f"diagnosis must be 0 (NoDR), 1 (NPDR) or 2 (PDR), got {diagnosis}")
    rng = np.random.default_rng(seed)
    lay = sample_layout(rng, size)
    refl, background = reflectance(rng, lay)

    lesions, summary = draw_lesions(rng, lay, diagnosis)
    refl = _blend(refl, lesions["scar"], SCAR, 0.8)
    refl = _blend(refl, lesions["exudate"], EXUDATE, 0.8)
    refl = _absorb(refl, lesions["red"], HAEMORRHAGE)

    vessels = grow_tree(rng, lay)
    tree = draw_tree(vessels, size, w_ref=0.025 * lay.radius)
    refl = _absorb(refl, tree["vein"], VEIN)
    refl = _absorb(refl, tree["artery"], ARTERY)
    if tree["reflex"] is not None:
        refl = refl + tree["reflex"][..., None] * REFLEX
    refl = _blend(refl, lesions["cotton_wool"], COTTON_WOOL, 0.55)
    refl = _absorb(refl, lesions["new_vessels"], NEW_VESSELS)
    refl = _blend(refl, lesions["preretinal"], PRERETINAL, 0.95)

    light, lighting = illumination(rng, lay)
    img = refl * light[..., None]
    img = ndimage.gaussian_filter(img, sigma=(0.45 * size / 256, 0.45 * size / 256, 0))
    img += rng.normal(0, 0.008, size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 1) * fov_alpha(lay)[..., None]
    record = {
        "generator": f"mkcnet.synth v{GENERATOR_VERSION}", "seed": int(seed), "size": size,
        "diagnosis": diagnosis, "diagnosis_name": DIAGNOSES[diagnosis], "lesions": summary,
        "layout": lay.to_dict(), "background": background, "illumination": lighting, "vessels": len(vessels),
    }
    return img.astype(np.float32), record
