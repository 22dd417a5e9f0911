"""MKCNet: image quality-aware diagnosis via meta-knowledge co-embedding (Che et al., CVPR 2023)."""

import os

# Everything trains from scratch and runs offline: never let timm or the hub try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
