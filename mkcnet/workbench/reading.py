"""One image through one model: probabilities per head, a plain-language reading, branch CAMs.

Every page that shows a prediction (Diagnose, the what-if panel, Compare, Embeddings) calls
`read_out` (probabilities only) or `analyse` (the same plus every branch CAM from one pass), so
they all say the same thing about the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mkcnet.analysis.cam import DEFAULT_METHOD, cam_targets, compute_cams, overlay
from mkcnet.models import TaskOutput
from mkcnet.models.meta_learner import num_blocks
from mkcnet.workbench.imaging import Prepared
from mkcnet.workbench.zoo import ZooModel

UNCERTAIN = 0.6  # a top probability below this is reported as uncertain


@dataclass
class Reading:
    diagnosis: dict[str, float]
    quality: dict[str, float] | None
    text: str  # Markdown, for people
    top_diagnosis: int
    top_quality: int | None
    top_auxiliary: int | None


def _metric(card: dict, group: str) -> float | None:
    value = card.get("metrics", {}).get(f"diagnosis.{group}.auc")
    return None if value is None or value != value else float(value)


def explain(model: ZooModel, diagnosis: np.ndarray, quality: np.ndarray | None) -> str:
    """The plain-language reading: what the model sees, and how far to trust it here."""
    dnames, k = model.class_names("diagnosis"), int(diagnosis.argmax())
    p = float(diagnosis[k])
    if p < UNCERTAIN:
        runner = int(np.argsort(diagnosis)[-2])
        lines = [f"**Uncertain:** {dnames[k]} ({p:.0%}) or {dnames[runner]} ({diagnosis[runner]:.0%})."]
    else:
        lines = [f"**{dnames[k]}** ({p:.0%})."]
    if quality is None:
        lines.append("This model has no quality head, so it cannot tell whether the image is good "
                     "enough to trust its diagnosis.")
        return " ".join(lines)
    qnames, q = model.class_names("quality"), int(quality.argmax())
    best = len(qnames) - 1  # quality labels are ordered worst → best
    card = model.entry.card
    hq, lq = _metric(card, "HQ"), _metric(card, "LQ")
    validated = f" (validation AUC: {hq:.2f} on good images, {lq:.2f} on poor ones)" if hq and lq else ""
    if q == best:
        lines.append(f"Image quality: **{qnames[q]}** ({quality[q]:.0%}) — the diagnosis is as reliable as "
                     f"this model gets{validated}.")
    elif q == 0:
        lines.append(f"Image quality: **{qnames[q]}** ({quality[q]:.0%}) — low quality, the diagnosis is "
                     f"less reliable{validated}; consider a new acquisition.")
    else:
        lines.append(f"Image quality: **{qnames[q]}** ({quality[q]:.0%}) — degraded, the diagnosis is somewhat "
                     f"less reliable{validated}.")
    return " ".join(lines)


def reading_from(model: ZooModel, out: TaskOutput) -> Reading:
    probs = {h: None if out.logits(h) is None else out.logits(h).detach().float().softmax(1)[0].numpy()
             for h in ("diagnosis", "quality", "auxiliary")}
    d, q, a = probs["diagnosis"], probs["quality"], probs["auxiliary"]
    return Reading(
        diagnosis={n: float(v) for n, v in zip(model.class_names("diagnosis"), d)},
        quality=None if q is None else {n: float(v) for n, v in zip(model.class_names("quality"), q)},
        text=explain(model, d, q),
        top_diagnosis=int(d.argmax()),
        top_quality=None if q is None else int(q.argmax()),
        top_auxiliary=None if a is None else int(a.argmax()),
    )


def read_out(model: ZooModel, prepared: Prepared) -> Reading:
    """Probabilities and the reading, without CAMs."""
    with model.lock, torch.no_grad():  # the lock: a CAM in another request may hook these layers
        return reading_from(model, model.task_net(prepared.tensor))


def auxiliary_class_name(model: ZooModel, k: int) -> str:
    """An auxiliary (ω) class by what owns it: under the joint mask each (diagnosis, quality)
    pair owns a block of `meta_length` sub-classes, so class k is sub-class k mod ψ of block
    k div ψ (the other masks' blocks belong to a diagnosis, a quality, or to all)."""
    c = model.config
    per_block = c.num_auxiliary // num_blocks(c.mask, c.num_diagnosis, c.num_quality)
    block, sub = divmod(int(k), per_block)
    diagnosis, quality = model.class_names("diagnosis"), model.class_names("quality")
    owner = {"joint": lambda: f"{diagnosis[block % c.num_diagnosis]}, {quality[block // c.num_diagnosis]}",
             "diagnosis": lambda: diagnosis[block], "quality": lambda: quality[block],
             "none": lambda: "any image"}[c.mask]()
    return f"ω sub-class {sub + 1} of ({owner})"


def analyse(model: ZooModel, prepared: Prepared, method: str = DEFAULT_METHOD,
            opacity: float = 0.5) -> tuple[Reading, list[tuple[np.ndarray, str]]]:
    """The reading plus (overlay, caption) for every branch the model has and the fused
    diagnosis, all from one forward pass; each map explains its head's top class."""
    with model.lock:
        cams = compute_cams(model.task_net, prepared.tensor, method)
    reading = reading_from(model, cams.output)
    top = {"diagnosis": reading.top_diagnosis, "quality": reading.top_quality, "auxiliary": reading.top_auxiliary}
    overlays = []
    for target in cam_targets(model.task_net):
        category = top[target.head]
        explained = (model.class_names(target.head)[category] if target.head != "auxiliary"
                     else auxiliary_class_name(model, category))
        overlays.append((overlay(prepared.display, cams.maps[target.key][0], opacity), f"{target.label} → {explained}"))
    return reading, overlays
