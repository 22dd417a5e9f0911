"""Families from tables: an op plus severity bands for its parameters.

Most families differ only in which op they call and how strong each severity is, so a
family is declared as a `Spec` (op, six band edges per parameter, optional extra random
choices) and `build_family` turns it into a registered `Family`. The severity scale in
the docs is generated from the same bands, so the table and the code cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mkcnet.degradation.base import SEVERITIES, Family, Params, in_band, new_seed, register, size_factor
from mkcnet.errors import UserError

Extras = Callable[[np.random.Generator, Params, tuple[int, ...]], Params]


@dataclass(frozen=True)
class Spec:
    """How to sample and apply one family; see the module docstring."""

    op: Callable[..., np.ndarray]
    summary: str
    bands: dict[str, tuple[float, ...]]  # six edges per parameter: severity s is in [b[s-1], b[s]]
    pixel_keys: frozenset[str] = frozenset()  # band values are px at 256 px: scale with the image
    integer_keys: frozenset[str] = frozenset()
    extras: tuple[Extras, ...] = field(default=())  # further random choices (angles, signs, seeds)


def check_severity(severity: int) -> int:
    if severity not in SEVERITIES:
        raise UserError(f"severity must be an integer 1..5, got {severity!r}")
    return int(severity)


def sample_spec(spec: Spec, rng: np.random.Generator, severity: int, shape: tuple[int, ...]) -> Params:
    params: Params = {}
    for key, bands in spec.bands.items():
        value = in_band(rng, bands, check_severity(severity))
        if key in spec.pixel_keys:
            value *= size_factor(shape)
        params[key] = int(round(value)) if key in spec.integer_keys else round(value, 6)
    for extra in spec.extras:
        params.update(extra(rng, params, shape))
    return params


def describe_bands(spec: Spec) -> tuple[str, ...]:
    """Severity 1..5 in words, e.g. "sigma_px 0.5–1", for the docs table."""
    rows = []
    for s in SEVERITIES:
        parts = []
        for key, b in spec.bands.items():
            lo, hi = sorted((b[s - 1], b[s]))
            unit = " (@256 px)" if key in spec.pixel_keys else ""
            parts.append(f"{key} {lo:g}–{hi:g}{unit}")
        rows.append(", ".join(parts))
    return tuple(rows)


def build_family(modality: str, name: str, spec: Spec,
                 apply: Callable[[np.ndarray, Params], np.ndarray] | None = None) -> Family:
    """Register `modality.name` sampling from `spec`; `apply` defaults to calling the op."""
    return register(Family(
        name=f"{modality}.{name}",
        modality=modality,
        summary=spec.summary,
        sample_params=lambda rng, severity, shape: sample_spec(spec, rng, severity, shape),
        apply=apply or (lambda img, params: spec.op(img, **params)),
        scale=describe_bands(spec),
    ))


# --- common extra random choices -----------------------------------------------------------


def noise_seed(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    return {"noise_seed": new_seed(rng)}


def any_angle(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
    return {"angle_deg": round(float(rng.uniform(0, 180)), 3)}


def either_direction(key: str) -> Extras:
    """Replace a factor f > 1 by 1/f half of the time (e.g. gamma that darkens or brightens)."""

    def extra(rng: np.random.Generator, params: Params, shape: tuple[int, ...]) -> Params:
        value: Any = params[key]
        return {key: round(1.0 / value, 6)} if rng.random() < 0.5 else {}

    return extra
