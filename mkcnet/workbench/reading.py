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
from mkcnet.branches import BRANCHES, SHARED_BACKBONE, Branch
from mkcnet.inference.predict import probabilities
from mkcnet.inference.robustness import Margin, robustness_margin
from mkcnet.models import TaskOutput
from mkcnet.models.meta_learner import num_blocks
from mkcnet.trust.guard import Verdict
from mkcnet.workbench.imaging import Prepared
from mkcnet.workbench.zoo import ZooModel

CONFIDENT = 0.8  # calibrated top probability (diagnosis, and the quality head's own) below this is "uncertain"
REASSURANCE = "as reliable as this model gets"  # said only when every check passes (tests hold it to that)


@dataclass
class Reading:
    diagnosis: dict[str, float]  # calibrated probabilities where the model is calibrated
    quality: dict[str, float] | None
    text: str  # Markdown, for people
    top_diagnosis: int
    top_quality: int | None
    top_auxiliary: int | None
    calibrated: bool = False
    verdict: Verdict | None = None  # the out-of-distribution guard's; None for a model without one
    diagnosis_set: tuple[str, ...] | None = None  # the classes still possible at `set_coverage`; None: no sets
    set_coverage: float | None = None
    margin: Margin | None = None  # the robustness margin, when it was asked for (`robustness_for`)


def _metric(card: dict, group: str) -> float | None:
    value = card.get("metrics", {}).get(f"diagnosis.{group}.auc")
    return None if value is None or value != value else float(value)


# The maps' colour scale: pytorch-grad-cam's default colormap (OpenCV's JET), low → high.
JET = ("#00007f", "#0000ff", "#007fff", "#00ffff", "#7fff7f", "#ffff00", "#ff7f00", "#ff0000", "#7f0000")
COLOUR_BAR = (
    '<div class="colour-bar" role="img" aria-label="map colour scale: blue low, red high">'
    f'<div style="height:12px;border-radius:3px;background:linear-gradient(to right,{",".join(JET)})"></div>'
    # (the ends on one line each, the middle wrapping between them: in a narrow panel they ran into each other)
    '<div style="display:flex;justify-content:space-between;gap:0.75em;font-size:0.85em">'
    '<span style="white-space:nowrap">no evidence</span>'
    '<span style="text-align:center">map colour: evidence for the class named under each map</span>'
    '<span style="white-space:nowrap">strongest</span></div></div>')
# The flagged reading's first words. The page strikes out the diagnosis box from the verdict itself
# (ui.PredictionPanel.flagged), never by finding these words.
OUT_OF_DISTRIBUTION = "This image does not look like the model's training data"


def describe_set(names: tuple[str, ...], coverage: float, num_classes: int) -> str:
    """A diagnosis set in words: "At 90 % confidence: **COVID-19** only.", or for two classes "… the
    model cannot choose between non-COVID and COVID-19: refer" (the set of names given)."""
    at = f"At {coverage:.0%} confidence"
    if len(names) == 1:
        return f"{at}: **{names[0]}** only."
    listed = " and ".join(names) if len(names) == 2 else ", ".join(names[:-1]) + f" or {names[-1]}"
    if len(names) == 2:
        return f"{at} the model **cannot choose between {listed}: refer**."
    every = " (every class: it cannot narrow the answer down)" if len(names) == num_classes else ""
    return f"{at} the answer is **one of {listed}: refer**{every}."


def describe_margin(margin: Margin, names: tuple[str, ...]) -> str:
    """The robustness margin in a sentence for the reading."""
    return (f"Robustness (this image degraded by the simulator, severities 1-5, seed {margin.seed}): the diagnosis "
            f"{margin.text(names)}.")


def explain(model: ZooModel, diagnosis: np.ndarray, quality: np.ndarray | None, verdict: Verdict | None = None,
            diagnosis_set: tuple[str, ...] | None = None, margin: Margin | None = None) -> str:
    """The plain-language reading, driven by the calibrated diagnosis confidence, the diagnosis set
    (which answers are still possible at the checkpoint's coverage), the quality head's own
    confidence, the out-of-distribution guard and, when given, the robustness margin; never by a
    top class alone."""
    calibration, dataset = model.loaded.calibration, model.entry.dataset
    sets = getattr(model.loaded, "prediction_sets", None)
    dnames, k = model.class_names("diagnosis"), int(diagnosis.argmax())
    p = float(diagnosis[k])
    if verdict is not None and verdict.ood:
        return (f"**{OUT_OF_DISTRIBUTION}** ({verdict.reason}). "
                f"Do not use the diagnosis: the model has only seen `{dataset}` images, and on anything else "
                f"its output means nothing (it would say {dnames[k]} {p:.0%}). No class activation maps are shown: "
                "they would explain that output.")
    kind = "calibrated" if calibration else "raw softmax, not calibrated"
    if p < CONFIDENT:
        runner = int(np.argsort(diagnosis)[-2])
        lines = [f"**Uncertain:** {dnames[k]} ({p:.0%}) or {dnames[runner]} ({diagnosis[runner]:.0%}); {kind}."]
    else:
        lines = [f"**{dnames[k]}** ({p:.0%}, {kind})."]
    q = None if quality is None else int(quality.argmax())
    qnames = model.class_names("quality")
    band = calibration.band(q, p) if calibration else None
    if band is not None:
        like = f"predicted {qnames[q]}, " if q is not None else ""
        lines.append(f"On validation images like this one ({like}confidence {band.low:.0%}-{band.high:.0%}) the "
                     f"model was right {band.accuracy:.0%} of the time ({band.correct} of {band.n}).")
    if diagnosis_set is not None and sets is not None:
        lines.append(describe_set(diagnosis_set, sets.coverage, len(dnames)) + " (A guarantee per predicted "
                     "image quality, from the validation images.)")
    elif calibration is not None:
        lines.append("No prediction sets: this checkpoint was calibrated before they existed, so nothing says which "
                     "answers remain possible at a stated confidence (run `mkcnet calibrate`).")
    if calibration is None:
        lines.append("These probabilities may overstate the model's confidence (run `mkcnet calibrate`).")
    if margin is not None:
        lines.append(describe_margin(margin, dnames))
    if verdict is None:
        lines.append("This model has no out-of-distribution guard: nothing checks that the image resembles its "
                     "training data.")
    if quality is None:
        lines.append("This model has no quality head, so it cannot tell whether the image is good "
                     "enough to trust its diagnosis.")
        return " ".join(lines)
    undecided = diagnosis_set is not None and len(diagnosis_set) > 1
    qp, best = float(quality[q]), len(qnames) - 1  # quality labels are ordered worst → best
    card = model.entry.card
    hq, lq = _metric(card, "HQ"), _metric(card, "LQ")
    validated = f" (validation AUC: {hq:.2f} on good images, {lq:.2f} on poor ones)" if hq and lq else ""
    if qp < CONFIDENT:
        lines.append(f"Image quality: the quality head itself is unsure ({qnames[q]} {qp:.0%}), so how far the "
                     f"diagnosis can be trusted is unclear{validated}.")
    elif q == best and p >= CONFIDENT and calibration is not None and verdict is not None and not undecided:
        lines.append(f"Image quality: **{qnames[q]}** ({qp:.0%}): the diagnosis is {REASSURANCE}{validated}.")
    elif q == best and (p < CONFIDENT or undecided):
        lines.append(f"Image quality: **{qnames[q]}** ({qp:.0%}), but the diagnosis itself is not confident.")
    elif q == best:
        lines.append(f"Image quality: **{qnames[q]}** ({qp:.0%}); without calibration and an out-of-distribution "
                     f"guard this model cannot say how far to trust its diagnosis{validated}.")
    elif q == 0:
        lines.append(f"Image quality: **{qnames[q]}** ({qp:.0%}): low quality, the diagnosis is "
                     f"less reliable{validated}; consider a new acquisition.")
    else:
        lines.append(f"Image quality: **{qnames[q]}** ({qp:.0%}): degraded, the diagnosis is somewhat "
                     f"less reliable{validated}.")
    return " ".join(lines)


def reading_from(model: ZooModel, out: TaskOutput, prepared: Prepared, margin: Margin | None = None) -> Reading:
    loaded = model.loaded
    logits = {h: out.logits(h).detach().float().cpu().numpy() for h in ("diagnosis", "quality", "auxiliary")
              if out.logits(h) is not None}
    probs = probabilities(logits, loaded.calibration.temperatures if loaded.calibration else None)
    d, q, a = probs["diagnosis"][0], probs.get("quality"), probs.get("auxiliary")
    q = None if q is None else q[0]
    verdict = None
    if loaded.guard is not None:
        features = out.features[loaded.guard.feature].detach().float().cpu().numpy()
        verdict = loaded.guard.verdicts(features, [prepared.stats])[0]
    diagnosis_set = None
    if loaded.prediction_sets is not None:
        group = None if "quality" not in logits else logits["quality"].argmax(1)
        member = loaded.prediction_sets.sets(d[None], group)[0]
        diagnosis_set = tuple(n for n, m in zip(model.class_names("diagnosis"), member) if m)
    return Reading(
        diagnosis={n: float(v) for n, v in zip(model.class_names("diagnosis"), d)},
        quality=None if q is None else {n: float(v) for n, v in zip(model.class_names("quality"), q)},
        text=explain(model, d, q, verdict, diagnosis_set, margin),
        top_diagnosis=int(d.argmax()),
        top_quality=None if q is None else int(q.argmax()),
        top_auxiliary=None if a is None else int(a[0].argmax()),
        calibrated=loaded.calibration is not None,
        verdict=verdict,
        diagnosis_set=diagnosis_set,
        set_coverage=None if loaded.prediction_sets is None else loaded.prediction_sets.coverage,
        margin=margin,
    )


def read_out(model: ZooModel, prepared: Prepared, margin: Margin | None = None) -> Reading:
    """Probabilities and the reading, without CAMs (with `margin`, the reading says it)."""
    with model.lock, torch.no_grad():  # the lock: a CAM in another request may hook these layers
        return reading_from(model, model.task_net(prepared.tensor), prepared, margin)


def robustness_for(model: ZooModel, image: np.ndarray, seed: int = 0) -> Margin:
    """The robustness margin of a decoded image (`ImageCache.read`'s) for a zoo model, over its
    modality's families, in one batched forward (about a second on 2 CPU cores for CT's 15
    families). Pass it to `read_out` / `analyse` and `case_report`.

        margin = robustness_for(model, context.images.read(path))
        reading = read_out(model, prepared, margin=margin)
    """
    with model.lock:
        return robustness_margin(model.loaded, image, model.entry.modality, seed)


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


SAME_METHODS = ("On the branch maps Grad-CAM, XGrad-CAM and HiResCAM coincide: each branch map is averaged over "
                "space before its head, so its gradient is the same at every position and the three reduce to one "
                "channel-weighted sum. They differ on the backbone-level map, whose gradient passes the spatial "
                "attention gates.")


def branch_of(key: str, label: str) -> Branch:
    return SHARED_BACKBONE if label == SHARED_BACKBONE.cam_label else BRANCHES[key]


def explain_maps(model: ZooModel) -> str:
    """One plain sentence per map this model has, what the colours mean, and when CAM methods agree."""
    lines = [f"- **{t.label}**: {branch_of(t.key, t.label).meaning}" for t in cam_targets(model.task_net)]
    return ("**Reading the maps** (each scaled to its own maximum; red: the strongest evidence for the class "
            "named under the map, blue: none):\n" + "\n".join(lines) + "\n\n" + SAME_METHODS)


def analyse(model: ZooModel, prepared: Prepared, method: str = DEFAULT_METHOD,
            opacity: float = 0.5, margin: Margin | None = None) -> tuple[Reading, list[tuple[np.ndarray, str]]]:
    """The reading plus (overlay, caption) for every branch the model has and the fused
    diagnosis, all from one forward pass; each map explains its head's top class."""
    with model.lock:
        cams = compute_cams(model.task_net, prepared.tensor, method)
    reading = reading_from(model, cams.output, prepared, margin)
    top = {"diagnosis": reading.top_diagnosis, "quality": reading.top_quality, "auxiliary": reading.top_auxiliary}
    overlays = []
    for target in cam_targets(model.task_net):
        category = top[target.head]
        explained = (model.class_names(target.head)[category] if target.head != "auxiliary"
                     else auxiliary_class_name(model, category))
        overlays.append((overlay(prepared.display, cams.maps[target.key][0], opacity), f"{target.label} → {explained}"))
    return reading, overlays
