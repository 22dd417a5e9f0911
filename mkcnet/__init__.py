"""MKCNet: image quality-aware diagnosis via meta-knowledge co-embedding (Che et al., CVPR 2023).

The Python front door, three lines:

    import mkcnet
    model = mkcnet.load("synth-fundus-mkcnet")       # bundled name, folder, checkpoint or hub id
    print(model.predict(["scan.png"])[0].diagnosis)

`load`, `Model` and `Assessment` are imported on first use (PEP 562), so `import mkcnet` and
`mkcnet --help` stay free of torch.
"""

import os
from typing import TYPE_CHECKING, Any

# Everything trains from scratch and runs offline: never let timm or the hub try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mkcnet.api import Assessment, Model, load

_LAZY = {"load": "mkcnet.api", "Model": "mkcnet.api", "Assessment": "mkcnet.inference.assessment"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mkcnet' has no attribute {name!r}")


__all__ = ["Assessment", "Model", "__version__", "load"]
