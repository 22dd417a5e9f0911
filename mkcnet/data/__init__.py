"""Data: image reading (`images`, numpy and Pillow only), split files, the decoded-image cache and
batching (`dataset`, torch and pandas).

The names below are imported on first use (PEP 562), so importing `mkcnet.data.images` does not
pull torch in through this package: the onnxruntime predict path depends on that.
"""

from typing import Any

_LAZY = {"Batch": "dataset", "ImageSet": "dataset", "SplitTable": "dataset", "decode_images": "dataset",
         "read_split": "dataset", "load_resized": "images", "read_image": "images", "to_channels": "images"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"mkcnet.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mkcnet.data' has no attribute {name!r}")


__all__ = ["Batch", "ImageSet", "SplitTable", "decode_images", "load_resized", "read_image", "read_split",
           "to_channels"]
