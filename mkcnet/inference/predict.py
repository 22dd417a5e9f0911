"""Running a trained Task Net over images: probabilities for every head, optional features."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from mkcnet.data.dataset import Batch
from mkcnet.device import autocast, memory_format
from mkcnet.models import TaskNet

FEATURE_NAMES = ("diagnosis", "quality", "auxiliary", "fused")


@dataclass
class Predictions:
    diagnosis: np.ndarray  # N×num_diagnosis probabilities
    quality: np.ndarray | None = None  # N×num_quality probabilities
    auxiliary: np.ndarray | None = None  # N×Σψ probabilities
    features: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def predict_batches(task_net: TaskNet, batches: Iterable[Batch], device: torch.device | str = "cpu",
                    features: bool = False, amp: bool = False, channels_last: bool = False) -> Predictions:
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
                    heads[head].append(logits.float().softmax(dim=1).cpu().numpy())
            if features:
                for name in FEATURE_NAMES:
                    if name in out.features:
                        feats.setdefault(name, []).append(out.features[name].float().cpu().numpy())
    finally:
        task_net.train(was_training)
    stack = {k: np.concatenate(v) if v else None for k, v in heads.items()}
    if stack["diagnosis"] is None:
        stack["diagnosis"] = np.zeros((0, task_net.config.num_diagnosis), np.float32)
    return Predictions(stack["diagnosis"], stack["quality"], stack["auxiliary"],
                       {k: np.concatenate(v) for k, v in feats.items()})
