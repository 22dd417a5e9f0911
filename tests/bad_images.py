"""Broken and hostile image files, shared by the workbench's unit and app tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid PNG header claiming 100 000 × 100 000 pixels: decoding it would need ~30 GB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# name -> (bytes, what the error message must say)
BAD_FILES = {
    "empty.png": (b"", "empty"),
    "notes.png": (b"this is not an image\n" * 10, "not an image"),
    "truncated.png": (png_bytes(np.full((64, 64, 3), 120, np.uint8))[:90], "cannot read"),
    "bomb.png": (bomb_png(), "too large"),
}
