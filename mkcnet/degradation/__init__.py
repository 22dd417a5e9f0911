"""Image-quality degradation simulator: modality-specific families with severities 1-5.

    from mkcnet.degradation import degrade, replay, list_families
    bad, record = degrade(pil_image, "fundus.blur", severity=3, seed=0)
    assert replay(pil_image, record) == bad   # bit-identical

Families are registered by the modality modules (fundus, oct, radiology), imported with the
first name taken from this package (PEP 562): `mkcnet --help` and `mkcnet predict` do not pay
for scipy and scikit-image unless they degrade an image.
"""

from typing import Any

_NAMES = {"apply_record_float01": "api", "degrade": "api", "get_family": "api", "list_families": "api",
          "make_record": "api", "replay": "api", "severity_table": "api", "MODALITIES": "base",
          "SEVERITIES": "base", "Family": "base", "from_float01": "base", "to_float01": "base", "Fov": "fov",
          "estimate_fov": "fov"}
_MODALITY_MODULES = ("fundus", "oct", "radiology")  # importing them registers their families


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        for module in _MODALITY_MODULES:
            importlib.import_module(f"mkcnet.degradation.{module}")
        return getattr(importlib.import_module(f"mkcnet.degradation.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'mkcnet.degradation' has no attribute {name!r}")


__all__ = [
    "MODALITIES", "SEVERITIES", "Family", "Fov", "apply_record_float01", "degrade", "estimate_fov",
    "from_float01", "get_family", "list_families", "make_record", "replay", "severity_table", "to_float01",
]
