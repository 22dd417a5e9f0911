"""Task conflict on the shared backbone: cosines between the per-task loss gradients.

A negative cosine between the diagnosis-loss and quality-loss gradients means the two tasks
pull the shared weights in opposing directions; the diagnosis–auxiliary cosine shows whether the
(meta-learned) auxiliary task helps the diagnosis. Measured on one fixed batch per epoch, in
training mode, through `torch.func.functional_call` on cloned BatchNorm buffers, so the probe
changes neither the weights, their gradients nor the running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mkcnet.data.dataset import Batch
from mkcnet.models import TaskNet
from mkcnet.training.objective import task_losses


def gradient_cosines(task_net: TaskNet, batch: Batch, aux_labels: torch.Tensor | None, gamma: float,
                     meta_length: int) -> dict[str, float]:
    """{"grad_cos.diagnosis_quality": c, "grad_cos.diagnosis_auxiliary": c} for the losses the model
    has; a pair is left out where a loss does not reach `task_net.backbone` (e.g. DETACH's quality)."""
    params = dict(task_net.named_parameters())
    buffers = {n: b.clone() for n, b in task_net.named_buffers()}
    parts = task_losses(functional_call(task_net, (params, buffers), (batch.images,)), batch, aux_labels, gamma,
                        meta_length)
    shared = [p for p in task_net.backbone.parameters() if p.requires_grad]
    grads = {}
    for task in ("diagnosis", "quality", "auxiliary"):
        loss = getattr(parts, task)
        if loss is not None:
            g = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            grads[task] = torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten() for p, gi in zip(shared, g)])
    out = {}
    for other in ("quality", "auxiliary"):
        if other in grads and grads[other].norm() > 0 and grads["diagnosis"].norm() > 0:
            out[f"grad_cos.diagnosis_{other}"] = float(F.cosine_similarity(grads["diagnosis"], grads[other], dim=0))
    return out
