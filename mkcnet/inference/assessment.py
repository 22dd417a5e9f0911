"""One image's assessment as a typed structure: what the Python API, the ONNX runtime, the
workbench's `/assess` endpoint and its MCP tool all return.

Torch-free on purpose (numpy and the trust data only): the ONNX runtime path builds the same
`Assessment` from onnxruntime's outputs without importing torch, timm or scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mkcnet.trust.conformal import PredictionSets
from mkcnet.trust.guard import Guard

HEADS = ("diagnosis", "quality")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / T in float64 (the same arithmetic as `mkcnet.trust.calibration`,
    repeated here so this module needs neither it nor scikit-learn, which that module's metrics pull in)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TrustData:
    """What a checkpoint knows beyond its weights: class names, temperatures, guard, prediction sets.

    Built from a checkpoint's header (`from_header`) or from an ONNX file's metadata; the same
    fields travel in both, so the two runtimes assess alike.
    """

    diagnosis_names: tuple[str, ...]
    quality_names: tuple[str, ...] | None  # None: the model has no quality head
    temperatures: dict[str, float] = field(default_factory=dict)  # empty: not calibrated
    guard: Guard | None = None
    prediction_sets: PredictionSets | None = None  # None: fitted before sets existed (no diagnosis_set)


def class_names(names: list[str] | tuple[str, ...], count: int) -> tuple[str, ...]:
    """The configured names when there is one per class, else "0", "1", ... (as the workbench does)."""
    return tuple(names) if len(names) == count else tuple(str(k) for k in range(count))


@dataclass(frozen=True)
class Assessment:
    """One image, assessed: diagnosis and quality probabilities (raw and calibrated), the
    out-of-distribution verdict, and, where the checkpoint has conformal data, a prediction set
    and referral advice.

    `diagnosis_probabilities` are calibrated when `calibrated` is true (temperature scaling fitted
    on the validation split), else equal to `diagnosis_raw`. `ood` is None for a model without an
    out-of-distribution guard; `ood_score` is the feature distance over the guard's threshold
    (above 1 is flagged). `error` is non-empty (and everything else empty) for an unreadable input.

    Example:
        >>> import mkcnet
        >>> a = mkcnet.load("ct-iqad-mkcnet").predict(["assets/examples/ct_COVID-19_HQ.png"])[0]  # doctest: +SKIP
        >>> a.diagnosis, round(a.confidence, 2), a.ood  # doctest: +SKIP
        ('COVID-19', 0.97, False)
    """

    source: str
    diagnosis: str = ""
    diagnosis_probabilities: dict[str, float] = field(default_factory=dict)
    diagnosis_raw: dict[str, float] = field(default_factory=dict)
    quality: str | None = None
    quality_probabilities: dict[str, float] | None = None
    quality_raw: dict[str, float] | None = None
    calibrated: bool = False
    ood: bool | None = None
    ood_score: float | None = None
    ood_reason: str = ""
    diagnosis_set: tuple[str, ...] | None = None  # the classes still possible at `set_coverage`; None without sets
    set_coverage: float | None = None
    referral: str | None = None  # "refer" (flagged, or a set of 2+ classes) or "diagnose"; None without sets
    error: str = ""

    @property
    def confidence(self) -> float:
        """The top diagnosis probability (calibrated where the model is); NaN for an error row."""
        return max(self.diagnosis_probabilities.values(), default=math.nan)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN scores become None), for /assess, MCP and `--format json`."""
        out = asdict(self)
        out["confidence"] = None if math.isnan(self.confidence) else self.confidence
        if out["diagnosis_set"] is not None:
            out["diagnosis_set"] = list(out["diagnosis_set"])
        if out["ood_score"] is not None and not math.isfinite(out["ood_score"]):
            out["ood_score"] = None
        return out


def _named(probs: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    return {n: float(p) for n, p in zip(names, probs)}


def assess_outputs(sources: list[str], logits: dict[str, np.ndarray], guard_feature: np.ndarray | None,
                   stats: list[tuple[float, float]], trust: TrustData) -> list[Assessment]:
    """Assessments from one batch's head logits (N×K per head) and the guard's feature (N×D).

    Example:
        >>> trust = TrustData(("healthy", "ill"), None, {"diagnosis": 2.0})
        >>> a = assess_outputs(["x.png"], {"diagnosis": np.array([[0.0, 2.0]])}, None, [(0.0, 1.0)], trust)[0]
        >>> a.diagnosis, round(a.diagnosis_raw["ill"], 3), round(a.diagnosis_probabilities["ill"], 3), a.ood
        ('ill', 0.881, 0.731, None)
    """
    raw = {h: softmax(z) for h, z in logits.items() if h in HEADS}
    cal = {h: softmax(z, trust.temperatures.get(h, 1.0)) for h, z in logits.items() if h in HEADS}
    verdicts = trust.guard.verdicts(guard_feature, stats) if trust.guard is not None else [None] * len(sources)
    sets = trust.prediction_sets
    # The sets' groups are the quality head's predicted class, as they were fitted (mkcnet calibrate).
    member = None if sets is None else sets.sets(cal["diagnosis"], logits["quality"].argmax(1) if "quality" in logits
                                                 and trust.quality_names is not None else None)
    out = []
    for i, (source, verdict) in enumerate(zip(sources, verdicts)):
        d = cal["diagnosis"][i]
        quality = None
        if "quality" in cal and trust.quality_names is not None:
            q = cal["quality"][i]
            quality = (trust.quality_names[int(q.argmax())], _named(q, trust.quality_names),
                       _named(raw["quality"][i], trust.quality_names))
        out.append(Assessment(
            source=source,
            diagnosis=trust.diagnosis_names[int(d.argmax())],
            diagnosis_probabilities=_named(d, trust.diagnosis_names),
            diagnosis_raw=_named(raw["diagnosis"][i], trust.diagnosis_names),
            quality=quality and quality[0], quality_probabilities=quality and quality[1],
            quality_raw=quality and quality[2],
            calibrated=bool(trust.temperatures),
            ood=None if verdict is None else verdict.ood,
            ood_score=None if verdict is None else verdict.score,
            ood_reason="" if verdict is None else verdict.reason,
            **({} if member is None else advice(member[i], trust.diagnosis_names, sets.coverage, verdict)),
        ))
    return out


def advice(member: np.ndarray, names: tuple[str, ...], coverage: float, verdict) -> dict[str, Any]:
    """The prediction set's fields: the classes in it, its coverage, and "refer" when the image is
    flagged or the set holds more than one class (the model cannot choose at that confidence)."""
    chosen = tuple(n for n, keep in zip(names, member) if keep)
    flagged = verdict is not None and verdict.ood
    return {"diagnosis_set": chosen, "set_coverage": float(coverage),
            "referral": "refer" if flagged or len(chosen) > 1 else "diagnose"}


TABLE_VERDICT = ("calibrated", "ood", "ood_score", "ood_reason")


def table_rows(assessments: list[Assessment], has_quality: bool, has_guard: bool) -> list[dict[str, Any]]:
    """`mkcnet predict`'s rows (image, diagnosis, p_diagnosis_*, quality, p_quality_*, calibrated,
    ood, ood_score, ood_reason, error), the same columns whichever runtime produced them."""
    rows = []
    for a in assessments:
        row: dict[str, Any] = {"image": a.source}
        if not a.error:
            row["diagnosis"] = a.diagnosis
            row |= {f"p_diagnosis_{n}": round(p, 4) for n, p in a.diagnosis_probabilities.items()}
            if has_quality and a.quality_probabilities is not None:
                row["quality"] = a.quality
                row |= {f"p_quality_{n}": round(p, 4) for n, p in a.quality_probabilities.items()}
            row["calibrated"] = a.calibrated
            if has_guard:
                row |= {"ood": a.ood, "ood_score": round(a.ood_score, 3), "ood_reason": a.ood_reason}
        row["error"] = a.error
        rows.append(row)
    return rows


__all__ = ["Assessment", "TrustData", "assess_outputs", "class_names", "softmax", "table_rows"]
