"""Diabetic-retinopathy lesions, graded as in the fundus DR sets (0 NoDR, 1 NPDR, 2 PDR).

NPDR: microaneurysms, dot/blot and flame haemorrhages, hard exudates (often in circinate
clusters near the macula) and cotton-wool spots, in counts that grow with the grade
(mild / moderate / severe). PDR adds neovascularisation (fine looping vessels on the disc
or along the arcades), often pre-retinal (boat-shaped) haemorrhage and sometimes laser scars.
Sizes are in px at 256 px (`u`) so they scale with the image.
"""

from __future__ import annotations

import math

import numpy as np

from mkcnet.synth.anatomy import Layout
from mkcnet.synth.canvas import SUPER, Layer

NPDR_COUNTS = {  # grade: (microaneurysms, haemorrhages, exudate clusters, cotton-wool spots)
    "mild": ((3, 12), (0, 2), (0, 1), (0, 1)),
    "moderate": ((8, 25), (3, 12), (1, 3), (0, 3)),
    "severe": ((15, 40), (15, 40), (2, 5), (2, 6)),
}
LAYERS = ("red", "exudate", "cotton_wool", "new_vessels", "preretinal", "scar")


def _site(rng: np.random.Generator, lay: Layout, spread: float = 0.45, max_rho: float = 0.9) -> tuple[float, float]:
    """A point on the posterior pole (around the disc-fovea axis), inside the FOV, off the disc."""
    mx, my = (lay.disc_x + lay.fovea_x) / 2, (lay.disc_y + lay.fovea_y) / 2
    for _ in range(50):
        x, y = rng.normal([mx, my], spread * lay.radius)
        inside = lay.rho(x, y) < max_rho and abs(y - lay.cy) < 0.95 * lay.crop * lay.radius
        if inside and math.hypot(x - lay.disc_x, y - lay.disc_y) > 1.3 * lay.disc_r:
            return float(x), float(y)
    return float(lay.fovea_x), float(lay.fovea_y)


def _blob(layer: Layer, rng: np.random.Generator, x: float, y: float, r: float, lobes: int,
          value: int = 255) -> None:
    """An irregular blob: a few overlapping rotated ellipses."""
    for _ in range(lobes):
        ox, oy = rng.normal(0, 0.35 * r, size=2) if lobes > 1 else (0.0, 0.0)
        layer.ellipse(x + ox, y + oy, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), value)


def npdr(rng: np.random.Generator, lay: Layout, layers: dict[str, Layer], grade: str) -> dict[str, int]:
    u = lay.size / 256
    n_ma, n_h, n_ex, n_cws = (int(rng.integers(lo, hi + 1)) for lo, hi in NPDR_COUNTS[grade])
    for _ in range(n_ma):
        layers["red"].disk(*_site(rng, lay), r=u * rng.uniform(0.6, 1.2), value=int(rng.integers(200, 256)))
    for _ in range(n_h):
        x, y = _site(rng, lay, spread=0.55)
        kind = rng.random()
        value = int(rng.integers(140, 256))  # haemorrhages vary in depth and age
        if kind < 0.45:  # dot
            layers["red"].disk(x, y, u * rng.uniform(1.3, 2.5), value)
        elif kind < 0.8:  # blot
            _blob(layers["red"], rng, x, y, u * rng.uniform(2.5, 5.5), lobes=int(rng.integers(2, 5)), value=value)
        else:  # flame: along the nerve fibres, i.e. radial from the disc
            angle = math.atan2(y - lay.disc_y, x - lay.disc_x)
            layers["red"].ellipse(x, y, u * rng.uniform(4, 8), u * rng.uniform(1.2, 2.2), angle, value)
    n_exudates = 0
    for _ in range(n_ex):
        cx, cy = _site(rng, lay, spread=0.25)
        ring = rng.random() < 0.5  # circinate ring around a leaking point, or a clump
        k = int(rng.integers(4, 25))
        for _ in range(k):
            if ring:
                a, rad = rng.uniform(0, 2 * np.pi), u * rng.uniform(6, 12)
                x, y = cx + rad * math.cos(a), cy + rad * math.sin(a)
            else:
                x, y = rng.normal([cx, cy], u * 5)
            if lay.rho(x, y) < 0.92:
                _blob(layers["exudate"], rng, float(x), float(y), u * rng.uniform(0.7, 2.2), lobes=int(rng.integers(1, 3)))
                n_exudates += 1
    for _ in range(n_cws):
        x, y = _site(rng, lay, spread=0.35)
        _blob(layers["cotton_wool"], rng, x, y, u * rng.uniform(3.5, 7.5), lobes=3)
    return {"microaneurysms": n_ma, "haemorrhages": n_h, "exudates": n_exudates, "cotton_wool_spots": n_cws}


def _frond(layer: Layer, rng: np.random.Generator, x: float, y: float, u: float, extent: float) -> None:
    """A neovascular frond: several fine, tightly curling loops from one root."""
    for _ in range(int(rng.integers(4, 9))):
        px, py, h, curl = x, y, rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.5) * rng.choice([-1, 1])
        xs, ys = [px], [py]
        for _ in range(int(extent / (1.2 * u))):
            h += curl + rng.normal(0, 0.35)
            px, py = px + 1.2 * u * math.cos(h), py + 1.2 * u * math.sin(h)
            xs.append(px), ys.append(py)
        n = len(xs)
        layer.polyline(np.asarray(xs), np.asarray(ys), np.full(n, u * rng.uniform(0.5, 0.9)), np.full(n, 220))


def pdr(rng: np.random.Generator, lay: Layout, layers: dict[str, Layer]) -> dict[str, int | bool]:
    u = lay.size / 256
    n_nv = int(rng.integers(1, 4))
    nvd = bool(rng.random() < 0.5)
    for i in range(n_nv):
        if nvd and i == 0:  # on the disc
            x, y = lay.disc_x + rng.normal(0, 0.5 * lay.disc_r), lay.disc_y + rng.normal(0, 0.5 * lay.disc_r)
        else:  # elsewhere, along the arcades
            a = rng.choice([-1, 1]) * rng.uniform(0.6, 1.3)
            x = lay.disc_x + lay.temporal * 0.45 * lay.radius * math.cos(a)
            y = lay.disc_y + 0.45 * lay.radius * math.sin(a)
        _frond(layers["new_vessels"], rng, float(x), float(y), u, extent=u * rng.uniform(8, 18))
    preretinal = bool(rng.random() < 0.5)
    if preretinal:  # boat-shaped: a disc whose top is cut by the horizontal fluid level
        x, y = _site(rng, lay, spread=0.35, max_rho=0.75)
        r = u * rng.uniform(8, 22)
        _blob(layers["preretinal"], rng, x, y, r, lobes=2)
        level = y - r * rng.uniform(0.0, 0.5)
        canvas = layers["preretinal"]
        canvas.draw.rectangle((0, 0, canvas.image.width, level * SUPER), fill=0)
    scars = 0
    if rng.random() < 0.25:  # pan-retinal photocoagulation scars in the periphery
        scars = int(rng.integers(40, 140))
        for _ in range(scars):
            a, rho = rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 0.95)
            layers["scar"].disk(lay.cx + rho * lay.radius * math.cos(a), lay.cy + rho * lay.radius * math.sin(a),
                                u * rng.uniform(1.5, 2.8))
    return {"new_vessel_fronds": n_nv, "nvd": nvd, "preretinal_haemorrhage": preretinal, "laser_scars": scars}


def draw_lesions(rng: np.random.Generator, lay: Layout, diagnosis: int) -> tuple[dict[str, np.ndarray], dict]:
    """Coverage maps per lesion layer and a summary (grade, counts) for the record."""
    layers = {k: Layer(lay.size) for k in LAYERS}
    summary: dict = {"grade": "none"}
    if diagnosis >= 1:
        grade = "severe" if diagnosis == 2 and rng.random() < 0.5 else str(
            rng.choice(["mild", "moderate", "severe"], p=[0.3, 0.4, 0.3]) if diagnosis == 1 else "moderate")
        summary = {"grade": grade, **npdr(rng, lay, layers, grade)}
    if diagnosis == 2:
        summary["grade"] = "proliferative"
        summary.update(pdr(rng, lay, layers))
    u = lay.size / 256
    blur = {"red": 0.5 * u, "exudate": 0.3 * u, "cotton_wool": 2.2 * u, "new_vessels": 0.3 * u,
            "preretinal": 0.8 * u, "scar": 0.5 * u}
    return {k: layer.array(blur[k]) for k, layer in layers.items()}, summary
