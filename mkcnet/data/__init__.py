"""Data: image reading, split files, the decoded-image cache, batching."""

from mkcnet.data.dataset import Batch, ImageSet, SplitTable, decode_images, read_split
from mkcnet.data.images import load_resized, read_image, to_channels

__all__ = ["Batch", "ImageSet", "SplitTable", "decode_images", "load_resized", "read_image", "read_split",
           "to_channels"]
