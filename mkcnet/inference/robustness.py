"""How fragile is one reading: the per-case robustness margin.

For one image and each degradation family of its modality, the lowest severity (1-5) at which the
model's diagnosis changes, or "holds through 5". The image is brought to the simulator's 256 px
working copy (as the workbench's what-if panel does), degraded at every family × severity with one
seed (the same draws each time: a margin is reproducible), and all of them, the clean working copy
first, go through the Task Net in one batch. The diagnosis that must hold is the clean working
copy's. A family whose diagnosis changes at 2 and returns at 3 still flips at 2: the margin is the
first change, which is what a reader needs to know.

    margin = robustness_margin(load_checkpoint("checkpoints/ct-iqad-mkcnet"), read_image("slice.dcm"))
    margin.text()   # "flips at gaussian noise 2, shot noise 3; holds through severity 5 of the other 13 families"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mkcnet.checkpoint import LoadedModel
from mkcnet.degradation import SEVERITIES, degrade, list_families
from mkcnet.presets import model_modality

WORKING_SIZE = 256  # the degradation simulator's reference side


def family_label(family: str) -> str:
    """"ct.gaussian_noise" → "gaussian noise"."""
    return family.split(".", 1)[-1].replace("_", " ")


@dataclass(frozen=True)
class Margin:
    """Per family, the lowest severity whose diagnosis differs from the clean one (None: holds through 5)."""

    diagnosis: int  # the clean working copy's diagnosis
    flips: dict[str, int | None]
    flipped_to: dict[str, int] = field(default_factory=dict)  # family → the diagnosis it flips to
    seed: int = 0

    @property
    def weakest(self) -> int | None:
        """The lowest flipping severity over all families (None: every family holds through 5)."""
        found = [s for s in self.flips.values() if s is not None]
        return min(found) if found else None

    def text(self, names: Sequence[str] | None = None) -> str:
        """"flips at gaussian noise 2 (to COVID-19), …; holds through severity 5 of the other 13 families"."""
        flipped = sorted(((s, f) for f, s in self.flips.items() if s is not None))
        held = [f for f, s in self.flips.items() if s is None]
        parts = []
        if flipped:
            to = (lambda f: f" (to {names[self.flipped_to[f]]})") if names else (lambda f: "")
            parts.append("flips at " + ", ".join(f"{family_label(f)} {s}{to(f)}" for s, f in flipped))
        if held and flipped:
            listed = ", ".join(family_label(f) for f in held)
            parts.append(f"holds through severity 5 of the other {len(held)} famil{'y' if len(held) == 1 else 'ies'}"
                         + (f" ({listed})" if len(held) <= 3 else ""))
        elif held:
            parts.append(f"holds through severity 5 of all {len(held)} families")
        return "; ".join(parts)

    def columns(self) -> dict[str, int | str]:
        """One value per family for a table: the flipping severity, or "holds"."""
        return {f"robust_{f.split('.', 1)[-1]}": "holds" if s is None else s for f, s in self.flips.items()}


def working_copy(image: np.ndarray, size: int = WORKING_SIZE) -> np.ndarray:
    """H×W×C uint8 → size×size×C (bilinear), the simulator's reference size."""
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    array = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return array[:, :, None] if array.ndim == 2 else array


def flip_severities(image: np.ndarray, families: Sequence[str], classify: Callable[[list[np.ndarray]], np.ndarray],
                    seed: int = 0) -> Margin:
    """The margin of `image` (uint8 H×W×C, already the working copy) under `classify`, which maps a
    list of such images to their diagnoses in one call."""
    batch = [image] + [degrade(image, family, s, seed)[0] for family in families for s in SEVERITIES]
    labels = np.asarray(classify(batch))
    clean, grid = int(labels[0]), labels[1:].reshape(len(families), len(SEVERITIES))
    flips, flipped_to = {}, {}
    for family, row in zip(families, grid):
        changed = np.flatnonzero(row != clean)
        flips[family] = int(SEVERITIES[changed[0]]) if len(changed) else None
        if len(changed):
            flipped_to[family] = int(row[changed[0]])
    return Margin(clean, flips, flipped_to, seed)


def robustness_margin(model: LoadedModel, image: np.ndarray, modality: str | None = None, seed: int = 0,
                      families: Sequence[str] | None = None) -> Margin:
    """The margin of one decoded image (`read_image`'s uint8 H×W×C) for a loaded model, over the
    families of its modality (the model card's, else its data set's), in one batched forward."""
    import torch

    from mkcnet.data.dataset import normalise
    from mkcnet.data.images import fit_to_model, to_channels

    mc = model.config.model
    families = list(families or list_families(modality or model_modality(model.config, model.info)))
    work = working_copy(to_channels(image, mc.in_chans))

    def classify(images: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(np.stack([fit_to_model(i, mc.input) for i in images]))
        device = next(model.task_net.parameters()).device
        with torch.no_grad():
            out = model.task_net(normalise(batch.to(device), mc.input))
        return out.logits("diagnosis").argmax(1).cpu().numpy()  # temperatures never change the argmax

    was_training = model.task_net.training
    model.task_net.eval()
    try:
        return flip_severities(work, families, classify, seed)
    finally:
        model.task_net.train(was_training)
