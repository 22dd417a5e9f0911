"""Make the contact sheets in docs/img/: degradation family x severity per modality, and a
grid of the synthetic fundus set with its labels.

Sources are only images the project generates (synthetic fundus, a synthetic OCT B-scan)
or public-domain images shipped with scikit-image (retina, Shepp-Logan phantom):
never real data from shared/data.

    python scripts/make_contact_sheets.py [--out docs/img] [--only degradation|synth]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage import data, transform

from mkcnet.degradation import degrade, list_families

TILE = 128
LABEL_W = 150
HEAD_H = 22


def _font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def retina_source(side: int) -> np.ndarray:
    """skimage's CC0 fundus photograph, resized."""
    return np.asarray(Image.fromarray(data.retina()).resize((side, side), Image.LANCZOS))


def phantom_source(side: int) -> np.ndarray:
    """The Shepp-Logan head phantom as an 8-bit CT slice."""
    img = transform.resize(data.shepp_logan_phantom(), (side, side), anti_aliasing=True)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def xray_source(side: int) -> np.ndarray:
    """A synthetic PA chest radiograph: torso, dark lungs with ribs, heart, spine, diaphragm."""
    yy, xx = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    rng = np.random.default_rng(0)
    body = 1 / (1 + np.exp(((np.abs(xx) / (0.82 + 0.12 * yy.clip(0))) ** 6 - 1) * 8))
    lungs = np.zeros_like(xx)
    for sign in (-1, 1):
        lx, ly = (xx - sign * 0.4) / (0.25 + 0.12 * (yy + 0.7).clip(0)), (yy + 0.02) / 0.72
        lungs = np.maximum(lungs, 1 / (1 + np.exp((lx**2 + ly**2 - 1) * 10)))
    lungs *= 1 / (1 + np.exp((yy - 0.5 - 0.1 * xx) * 25))  # diaphragm domes
    heart = np.exp(-(((xx - 0.1) / 0.3) ** 2 + ((yy - 0.32) / 0.3) ** 2) ** 2)
    spine = np.exp(-(xx / 0.07) ** 4)
    ribs = np.zeros_like(xx)
    for k in range(9):
        curve = -0.62 + 0.13 * k + 0.5 * (np.abs(xx) - 0.1).clip(0) ** 2 - 0.1 * np.abs(xx)
        ribs += np.exp(-((yy - curve) / 0.022) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal((side, side)), side / 90)
    img = (0.1 + 0.55 * body - 0.42 * lungs * (1 - 0.8 * heart) + 0.15 * heart * body + 0.1 * spine * body
           + 0.12 * ribs * lungs + 0.15 * texture * lungs)
    return np.rint(np.clip(ndimage.gaussian_filter(img, side / 300), 0, 1) * 255).astype(np.uint8)


def oct_source(side: int) -> np.ndarray:
    """A synthetic OCT B-scan: retinal layers with a foveal pit, bright RPE, textured choroid."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    pit = np.exp(-((xx - 0.5) / 0.09) ** 2)
    top = 0.3 + 0.12 * pit + 0.02 * np.sin(xx * 3)
    bottom = 0.62 + 0.02 * np.sin(xx * 3)  # RPE
    inner = (bottom - top)
    depth = (yy - top) / inner  # 0 at the inner surface, 1 at the RPE
    img = np.zeros((side, side))
    layers = ((0.0, 0.08 * (1 - pit), 0.85), (0.08, 0.25, 0.5), (0.25, 0.35, 0.2), (0.35, 0.42, 0.55),
              (0.42, 0.85, 0.12), (0.88, 0.91, 0.7))
    for lo, hi, level in layers:
        img += level * ((depth >= lo) & (depth < hi))
    img += 1.0 * (np.abs(yy - bottom) < 0.012)
    choroid = (yy > bottom + 0.012) & (yy < bottom + 0.16)
    rng = np.random.default_rng(0)
    img += choroid * (0.35 + 0.2 * ndimage.gaussian_filter(rng.standard_normal((side, side)), 2))
    return np.rint(np.clip(ndimage.gaussian_filter(img, side / 300), 0, 1) * 255).astype(np.uint8)


SOURCES = {"fundus": retina_source, "xray": xray_source, "ct": phantom_source, "oct": oct_source}


def _grid(rows: list[tuple[str, list[np.ndarray]]], columns: list[str]) -> Image.Image:
    """Row label on the left, a header of column titles, tiles in between."""
    tile = rows[0][1][0].shape[0]
    sheet = Image.new("RGB", (LABEL_W + tile * len(columns), HEAD_H + tile * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(columns):
        draw.text((LABEL_W + j * tile + 6, 4), title, fill="black", font=_font())
    for i, (label, tiles) in enumerate(rows):
        draw.text((6, HEAD_H + i * tile + tile // 2 - 8), label, fill="black", font=_font())
        for j, img in enumerate(tiles):
            sheet.paste(Image.fromarray(img).convert("RGB"), (LABEL_W + j * tile, HEAD_H + i * tile))
    return sheet


def degradation_sheet(modality: str, seed: int = 0) -> Image.Image:
    src = SOURCES[modality](TILE)
    rows = []
    for fam in list_families(modality):
        tiles = [src] + [degrade(src, fam, s, seed=seed + s)[0] for s in range(1, 6)]
        rows.append((fam, tiles))
    return _grid(rows, ["clean"] + [f"severity {s}" for s in range(1, 6)])


def synth_sheet(seed: int = 0, per_cell: int = 2, side: int = 176) -> Image.Image:
    """Rows: diagnosis; columns: quality x `per_cell`; each tile labelled "NPDR / usable"."""
    from mkcnet.synth import DIAGNOSES, QUALITIES, synth_sample

    rng = np.random.default_rng(seed)
    rows = []
    for d, dname in enumerate(DIAGNOSES):
        tiles = []
        for q in reversed(range(len(QUALITIES))):
            for _ in range(per_cell):
                img, _ = synth_sample(int(rng.integers(2**31)), side, d, q)
                tile = Image.fromarray(img)
                ImageDraw.Draw(tile).text((4, side - 16), f"{dname} / {QUALITIES[q]}", fill="white",
                                          font=_font(12), stroke_width=1, stroke_fill="black")
                tiles.append(np.asarray(tile))
        rows.append((dname, tiles))
    cols = [QUALITIES[q] for q in reversed(range(len(QUALITIES))) for _ in range(per_cell)]
    return _grid(rows, cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--only", choices=("degradation", "synth"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sheets = {}
    if args.only in (None, "degradation"):
        sheets.update({f"degradation_{m}.png": degradation_sheet(m) for m in SOURCES})
    if args.only in (None, "synth"):
        sheets["synth_fundus.png"] = synth_sheet()
    for name, sheet in sheets.items():
        path = args.out / name
        sheet.save(path, optimize=True)
        print(f"{path}  {sheet.size[0]}x{sheet.size[1]}  {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
