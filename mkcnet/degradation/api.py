"""Public entry points: degrade an image, replay a record, list the families."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from mkcnet.degradation.base import MODALITIES, Family, from_float01, registry, to_float01
from mkcnet.degradation.spec import check_severity
from mkcnet.errors import UserError

RECORD_VERSION = 1


def list_families(modality: str | None = None) -> list[str]:
    """Family names ("fundus.blur", "ct.streak", ...), optionally of one modality."""
    if modality is not None and modality not in MODALITIES:
        raise UserError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    return sorted(n for n, f in registry().items() if modality in (None, f.modality))


def get_family(name: str) -> Family:
    """The family called `name`; a helpful error for a typo or an unqualified name."""
    fams = registry()
    if name in fams:
        return fams[name]
    same_tail = [n for n in fams if n.split(".", 1)[1] == name]
    close = same_tail or difflib.get_close_matches(name, fams, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see `mkcnet degrade --list`"
    raise UserError(f"unknown degradation family {name!r}{hint}")


def make_record(family: str, severity: int, shape: tuple[int, ...], seed: int | None = None) -> dict[str, Any]:
    """Draw the parameters of one degradation for an image of `shape` (H, W[, C])."""
    fam = get_family(family)
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**32 - 1))
    params = fam.sample_params(np.random.default_rng(seed), check_severity(severity), tuple(shape))
    return {"version": RECORD_VERSION, "family": fam.name, "severity": int(severity), "seed": int(seed),
            "shape": [int(shape[0]), int(shape[1])], "params": params}


def apply_record_float01(img: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Apply a record to a float01 (H, W, C) array; no conversion, for the data-set builders."""
    try:
        family, params, shape = record["family"], record["params"], record["shape"]
    except (KeyError, TypeError) as err:
        raise UserError(f"not a degradation record (missing {err})") from None
    if list(img.shape[:2]) != list(shape):
        raise UserError(f"the record was made for a {shape[0]}x{shape[1]} image, this one is "
                        f"{img.shape[0]}x{img.shape[1]}")
    return get_family(family).apply(img, params).astype(np.float32, copy=False)


def degrade(image: Any, family: str, severity: int, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Degrade a PIL image or array; returns the same kind of image and a JSON-able record.

    The record holds the seed and every drawn parameter: `replay(image, record)` gives the
    identical result, and so does `degrade` with the same seed.
    """
    img, kind = to_float01(image)
    record = make_record(family, severity, img.shape, seed)
    return from_float01(apply_record_float01(img, record), kind), record


def replay(image: Any, record: dict[str, Any]) -> Any:
    """Re-apply a recorded degradation to the image it was made for."""
    img, kind = to_float01(image)
    return from_float01(apply_record_float01(img, record), kind)


def severity_table(modality: str | None = None) -> list[dict[str, str]]:
    """What each severity means per family (from the same bands the sampler uses), for docs/UIs."""
    rows = []
    for name in list_families(modality):
        fam = get_family(name)
        rows.append({"family": name, "summary": fam.summary, **{str(s): text for s, text in zip(range(1, 6), fam.scale)}})
    return rows
