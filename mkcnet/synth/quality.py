"""Quality labels for the synthetic set from the fundus degradations (EyeQ-style grades).

2 good: clean, or a barely visible disturbance (severity 1).
1 usable: one type at severity 2-3, or two types at severity 2 ("fundus.mixed").
0 reject: one type at severity 4-5, or three types at severity 3-5.

The plan leans towards the hard cases the MKCNet paper is about: usable diseased images
whose lesions are hidden by blur or poor illumination, and usable healthy images with
artifact spots that look like lesions. Each image's record says which hard case it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mkcnet.degradation import make_record

QUALITIES = ("reject", "usable", "good")
HIDING = ("fundus.blur", "fundus.light", "fundus.hole")


def plan_degradation(rng: np.random.Generator, quality: int, diagnosis: int,
                     shape: tuple[int, int, int]) -> dict[str, Any] | None:
    """A degradation record for an image of `shape` that should end up with `quality`."""
    if quality == 2:
        if rng.random() < 0.6:
            return None
        family, severity = str(rng.choice(["fundus.light", "fundus.blur", "fundus.halo"])), 1
    elif quality == 1:
        if diagnosis == 0 and rng.random() < 0.35:
            family = "fundus.spots"  # artifact that mimics a lesion
        elif diagnosis > 0 and rng.random() < 0.35:
            family = str(rng.choice(HIDING))  # lesions hidden by blur or illumination
        else:
            family = str(rng.choice(["fundus.blur", "fundus.light", "fundus.halo", "fundus.hole",
                                     "fundus.spots", "fundus.mixed"]))
        severity = 2 if family == "fundus.mixed" else int(rng.integers(2, 4))
    else:
        if rng.random() < 0.5:
            family, severity = "fundus.mixed", int(rng.integers(3, 6))
        else:
            family = str(rng.choice(["fundus.blur", "fundus.light", "fundus.hole", "fundus.halo"]))
            severity = int(rng.integers(4, 6))
    return make_record(family, severity, shape, seed=int(rng.integers(0, 2**31 - 1)))


def hard_case(record: dict[str, Any] | None, diagnosis: int, quality: int) -> str | None:
    """Name the confounder a usable image carries, if any (a reject image is simply bad)."""
    if record is None or quality != 1:
        return None
    steps = record["params"].get("steps") or [{"type": record["family"].split(".")[1]}]
    kinds = {s["type"] for s in steps}
    if diagnosis == 0 and "spots" in kinds:
        return "artifact_mimics_lesion"
    if diagnosis > 0 and kinds & {"blur", "light", "hole"}:
        return "lesion_hidden_by_blur_or_light"
    return None
