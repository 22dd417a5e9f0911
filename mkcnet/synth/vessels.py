"""The retinal vessel tree: arteries and veins grown from the optic disc.

Each trunk is a persistent random walk steered towards a target heading, so the temporal
arcades arch around the macula; vessels fork with Murray's law (w^3 = w1^3 + w2^3), taper,
avoid the foveal avascular zone and stop at the rim or when too thin to see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mkcnet.synth.anatomy import Layout
from mkcnet.synth.canvas import Layer

# trunks in a frame where +x is temporal: (initial heading, target heading, steering, width)
TRUNKS = (
    (-80.0, -12.0, 0.075, 1.0),  # superior temporal arcade
    (80.0, 12.0, 0.075, 1.0),  # inferior temporal arcade
    (-115.0, -160.0, 0.03, 0.75),  # superior nasal
    (115.0, 160.0, 0.03, 0.75),  # inferior nasal
    (180.0, 180.0, 0.02, 0.5),  # nasal
)


@dataclass
class Vessel:
    kind: str  # "artery" or "vein"
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    ws: list[float] = field(default_factory=list)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def grow_tree(rng: np.random.Generator, lay: Layout) -> list[Vessel]:
    """All vessels of one eye, arteries and veins; a trunk spawns its branches as it grows."""
    r = lay.radius
    w0 = r * rng.uniform(0.03, 0.036)  # vein width at the disc (~8 px at 512 px)
    w_min = max(0.35, 0.0028 * r)
    step = 0.02 * r
    mirror = lay.temporal == -1
    todo = []
    for start, target, steer, scale in TRUNKS:
        for kind, off, wk in (("vein", rng.uniform(4, 12), 1.0), ("artery", -rng.uniform(4, 12), 0.78)):
            h0, ht = math.radians(start + off + rng.normal(0, 6)), math.radians(target + rng.normal(0, 6))
            if mirror:
                h0, ht = math.pi - h0, math.pi - ht
            jitter = rng.normal(0, 0.15 * lay.disc_r, size=2)
            todo.append((kind, lay.disc_x + jitter[0], lay.disc_y + jitter[1], h0, ht, steer, w0 * wk * scale, 0))
    for _ in range(int(rng.integers(2, 5))):  # thin papillomacular branches towards the fovea
        h = math.atan2(lay.fovea_y - lay.disc_y, lay.fovea_x - lay.disc_x) + rng.normal(0, 0.35)
        todo.append((str(rng.choice(["artery", "vein"])), lay.disc_x, lay.disc_y, h, None, 0.0, w0 * 0.3, 2))

    vessels = []
    while todo:
        kind, x, y, h, target, steer, w, depth = todo.pop()
        v = Vessel(kind, [x], [y], [w])
        drift = 0.0
        noise = rng.standard_normal(400)
        for i in range(400):
            if target is not None:
                h += steer * _wrap(target - h)
            drift = 0.92 * drift + 0.015 * noise[i]  # persistent curvature: smooth meanders
            h += drift
            fx, fy = lay.fovea_x - x, lay.fovea_y - y
            d_f = math.hypot(fx, fy) / r
            if d_f < 0.09 or (w > 2.5 * w_min and d_f < 0.3):  # FAZ; big vessels keep off the macula
                if d_f < 0.09:
                    break
                cross = math.cos(h) * fy - math.sin(h) * fx
                h -= 0.1 * math.copysign(1.0, cross)
            stride = step if w > 3 * w_min else 1.6 * step  # coarser steps for thin vessels
            x += stride * math.cos(h)
            y += stride * math.sin(h)
            w *= 0.994 if w > 3 * w_min else 0.985  # thin vessels fade out sooner
            v.xs.append(x), v.ys.append(y), v.ws.append(w)
            if math.hypot(x - lay.cx, y - lay.cy) > r or w < w_min:
                break
            if depth < 5 and w > 2.0 * w_min and rng.random() < 0.07:
                wc = w * rng.uniform(0.45, 0.8)
                w = (w**3 - wc**3) ** (1 / 3)
                side = rng.choice([-1.0, 1.0])
                hc = h + side * math.radians(rng.uniform(35, 80))
                away = math.atan2(y - lay.disc_y, x - lay.disc_x)  # children spread outwards
                todo.append((kind, x, y, hc, away, 0.02, wc, depth + 1))
        vessels.append(v)
    return vessels


def draw_tree(vessels: list[Vessel], size: int, w_ref: float) -> dict[str, np.ndarray]:
    """Coverage maps "artery", "vein" and "reflex" (the central light reflex of big vessels)."""
    layers = {k: Layer(size) for k in ("artery", "vein", "reflex")}
    for v in sorted(vessels, key=lambda v: v.ws[0]):  # thick over thin
        ws = np.asarray(v.ws)
        values = 255 * np.clip(0.5 + 0.5 * ws / w_ref, 0, 1)
        layers[v.kind].polyline(np.asarray(v.xs), np.asarray(v.ys), ws, values)
        if v.kind == "artery" and ws[0] > 0.45 * w_ref:
            big = ws > 0.45 * w_ref
            layers["reflex"].polyline(np.asarray(v.xs)[big], np.asarray(v.ys)[big], ws[big] * 0.3,
                                      np.full(big.sum(), 255))
    return {k: layer.array() for k, layer in layers.items()}
