"""Procedural colour-fundus photographs with DR grades and quality labels (no data needed).

    from mkcnet.synth import generate_fundus, synth_sample, make_synth_dataset
    img01, record = generate_fundus(seed=3, size=256, diagnosis=1)      # clean image
    img_u8, record = synth_sample(seed=3, size=256, diagnosis=1, quality=1)  # degraded
    make_synth_dataset("data/synth-fundus", n=2000, size=256, seed=0)

The names are imported on first use (PEP 562), so `mkcnet --help` does not load the generator.
"""

from typing import Any

_NAMES = {"make_synth_dataset": "dataset", "synth_sample": "dataset", "DIAGNOSES": "fundus",
          "generate_fundus": "fundus", "QUALITIES": "quality"}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"mkcnet.synth.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'mkcnet.synth' has no attribute {name!r}")


__all__ = ["DIAGNOSES", "QUALITIES", "generate_fundus", "make_synth_dataset", "synth_sample"]
