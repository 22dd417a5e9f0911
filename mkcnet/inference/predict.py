"""Running a trained Task Net over images: probabilities for every head, optional features."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from mkcnet.branches import FEATURE_NAMES
from mkcnet.data.dataset import Batch
from mkcnet.device import autocast, memory_format
from mkcnet.models import TaskNet
from mkcnet.trust.calibration import softmax


@dataclass
class Predictions:
    diagnosis: np.ndarray  # N×num_diagnosis probabilities
    quality: np.ndarray | None = None  # N×num_quality probabilities
    auxiliary: np.ndarray | None = None  # N×Σψ probabilities
    features: dict[str, np.ndarray] = field(default_factory=dict)
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # per head, before any temperature
    calibrated: bool = False  # probabilities are temperature-scaled


def probabilities(logits: dict[str, np.ndarray], temperatures: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Softmax of each head's logits divided by its temperature (1 where none is given)."""
    temperatures = temperatures or {}
    return {head: softmax(z, temperatures.get(head, 1.0)).astype(np.float32) for head, z in logits.items()}


@torch.no_grad()
def predict_batches(task_net: TaskNet, batches: Iterable[Batch], device: torch.device | str = "cpu",
                    features: bool = False, amp: bool = False, channels_last: bool = False,
                    temperatures: dict[str, float] | None = None, extra_features: tuple[str, ...] = ()) -> Predictions:
    """Every head's logits and probabilities (temperature-scaled where `temperatures` names the head);
    with `features`, the branch features, plus any `extra_features` (e.g. the guard's "backbone")."""
    device = torch.device(device)
    was_training = task_net.training
    task_net.eval()
    heads: dict[str, list[np.ndarray]] = {"diagnosis": [], "quality": [], "auxiliary": []}
    feats: dict[str, list[np.ndarray]] = {}
    try:
        for batch in batches:
            x = batch.images.to(device, memory_format=memory_format(channels_last))
            with autocast(device, amp):
                out = task_net(x)
            for head in heads:
                logits = out.logits(head)
                if logits is not None:
                    heads[head].append(logits.float().cpu().numpy())
            if features or extra_features:
                for name in (FEATURE_NAMES if features else ()) + tuple(extra_features):
                    if name in out.features:
                        feats.setdefault(name, []).append(out.features[name].float().cpu().numpy())
    finally:
        task_net.train(was_training)
    logits = {k: np.concatenate(v) for k, v in heads.items() if v}
    logits.setdefault("diagnosis", np.zeros((0, task_net.config.num_diagnosis), np.float32))
    probs = probabilities(logits, temperatures)
    return Predictions(probs["diagnosis"], probs.get("quality"), probs.get("auxiliary"),
                       {k: np.concatenate(v) for k, v in feats.items()}, logits, bool(temperatures))
