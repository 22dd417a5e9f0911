"""Drawing helpers for the generator: smooth noise fields and anti-aliased vector layers.

Vector shapes (vessels, lesions) are drawn with PIL on a canvas `SUPER` times larger than
the image and box-reduced, which gives sub-pixel widths and soft edges at C speed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SUPER = 4


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) zero-mean, unit-std noise with about `cells` blobs across (bicubic upsampling)."""
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = Image.fromarray(grid, mode="F").resize((size + 3 * size // cells, size + 3 * size // cells), Image.BICUBIC)
    off = int(rng.integers(0, max(1, size // cells)))
    out = np.asarray(big)[off:off + size, off:off + size]
    return (out - out.mean()) / (out.std() + 1e-6)


class Layer:
    """A greyscale coverage layer drawn at SUPER x resolution; `array()` gives (S, S) in [0, 1]."""

    def __init__(self, size: int):
        self.size = size
        self.dirty = False  # set by every drawing call; an untouched layer is skipped
        self._image: Image.Image | None = None
        self._draw: ImageDraw.ImageDraw | None = None

    @property
    def image(self) -> Image.Image:
        """The canvas, allocated on first use (most lesion layers of a healthy eye stay empty)."""
        if self._image is None:
            self._image = Image.new("L", (self.size * SUPER, self.size * SUPER), 0)
        return self._image

    @property
    def draw(self) -> ImageDraw.ImageDraw:
        if self._draw is None:
            self._draw = ImageDraw.Draw(self.image)
        return self._draw

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return x * SUPER, y * SUPER

    def disk(self, x: float, y: float, r: float, value: int = 255) -> None:
        self.dirty = True
        cx, cy = self._xy(x, y)
        r = max(r * SUPER, 0.6)
        self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=value)

    def ellipse(self, x: float, y: float, rx: float, ry: float, angle: float, value: int = 255) -> None:
        """A rotated ellipse as a polygon (angle in radians)."""
        self.dirty = True
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        px, py = rx * np.cos(t), ry * np.sin(t)
        c, s = np.cos(angle), np.sin(angle)
        pts = [self._xy(x + a * c - b * s, y + a * s + b * c) for a, b in zip(px, py)]
        self.draw.polygon(pts, fill=value)

    def polyline(self, xs: np.ndarray, ys: np.ndarray, widths: np.ndarray, values: np.ndarray) -> None:
        """A tapering line: runs of equal (canvas) width and value are drawn as one line call;
        round joints only where the line is thick enough for gaps to show."""
        self.dirty = True
        ws = np.maximum(1, np.rint(widths * SUPER)).astype(int)
        vs = (np.asarray(values) // 16 * 16).astype(int)  # coarse levels -> long runs, few calls
        pts = np.stack([xs, ys], axis=1) * SUPER
        breaks = np.flatnonzero((np.diff(ws) != 0) | (np.diff(vs) != 0)) + 1
        for lo, hi in zip([0, *breaks], [*breaks, len(ws)]):
            run = pts[lo:min(hi + 1, len(pts))]
            if len(run) > 1:
                self.draw.line(run.ravel().tolist(), fill=int(vs[lo]), width=int(ws[lo]))
            if ws[lo] > 5:
                r = ws[lo] / 2
                for x, y in run[1:-1]:
                    self.draw.ellipse((x - r, y - r, x + r, y + r), fill=int(vs[lo]))

    def array(self, blur_px: float = 0.0) -> np.ndarray | None:
        """The coverage map, or None when nothing was drawn (callers skip the layer)."""
        if not self.dirty:
            return None
        out = np.asarray(self.image.reduce(SUPER), dtype=np.float32) / 255.0
        return ndimage.gaussian_filter(out, blur_px) if blur_px > 0 else out
