"""Class activation maps for every feature branch, through pytorch-grad-cam.

One mechanism for all branches: a `CamTarget` names a layer and a head, and `HeadLogits`
turns the Task Net (which returns a TaskOutput) into the plain logits tensor pytorch-grad-cam
expects. The targets:

- diagnosis / quality / auxiliary ω: the branch's attended map (`branches[b].attended`, an
  identity placed there for this) with that branch's own head as the target;
- fused diagnosis: the shared backbone's last feature map with the diagnosis head as target;
  the fused feature combines the diagnosis and ω branches, and both are fed by that map.

The class scored is the head's top class unless one is given (for ω: the top auxiliary logit).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from mkcnet.errors import UserError
from mkcnet.models import TaskNet, TaskOutput

if TYPE_CHECKING:
    from pytorch_grad_cam.base_cam import BaseCAM

# Shown name → pytorch-grad-cam class. The library is imported on first use: it pulls in
# OpenCV, scikit-learn and more, a second or more of the app's start. Score-CAM and
# Ablation-CAM are left out: one forward pass per channel (384 here) is far beyond the
# one-second budget on a CPU.
CAM_METHODS = {
    "Grad-CAM": "GradCAM",
    "Grad-CAM++": "GradCAMPlusPlus",
    "XGrad-CAM": "XGradCAM",
    "HiResCAM": "HiResCAM",
    "LayerCAM": "LayerCAM",
    "EigenCAM": "EigenCAM",
    "EigenGrad-CAM": "EigenGradCAM",
}
DEFAULT_METHOD = "Grad-CAM"


def cam_class(method: str) -> type[BaseCAM]:
    """pytorch-grad-cam's class for a shown method name."""
    if method not in CAM_METHODS:
        raise UserError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    return getattr(importlib.import_module("pytorch_grad_cam"), CAM_METHODS[method])

BRANCH_LABELS = {
    "diagnosis": "diagnosis branch",
    "quality": "quality branch",
    "auxiliary": "auxiliary ω branch",
    "fused": "fused diagnosis",
}


class HeadLogits(nn.Module):
    """Adapter: the Task Net with one head's logits as its output."""

    def __init__(self, task_net: TaskNet, head: str):
        super().__init__()
        self.task_net = task_net
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task_net(x).logits(self.head)


@dataclass(frozen=True)
class CamTarget:
    key: str  # "diagnosis", "quality", "auxiliary" or "fused"
    head: str  # whose logits are explained
    layer: nn.Module

    @property
    def label(self) -> str:
        return BRANCH_LABELS[self.key]


def backbone_output_layer(task_net: TaskNet) -> nn.Module:
    """The module whose output is the backbone's final feature map. timm's feature wrappers
    return a list, which pytorch-grad-cam cannot hook, so we take their last stage."""
    backbone = task_net.backbone
    name = backbone.feature_info.module_name(-1)
    for candidate in (name.replace(".", "_"), name):  # FeatureListNet flattens dotted names
        try:
            return backbone.get_submodule(candidate)
        except AttributeError:
            continue
    raise UserError(f"cannot find the backbone's last stage {name!r} for the fused CAM")


def cam_targets(task_net: TaskNet) -> list[CamTarget]:
    """Every branch the method has, then the fused diagnosis."""
    targets = [CamTarget(b, b, branch.attended) for b, branch in task_net.branches.items()]
    return targets + [CamTarget("fused", "diagnosis", backbone_output_layer(task_net))]


def cam_engine(method: str, task_net: TaskNet, target: CamTarget) -> BaseCAM:
    """pytorch-grad-cam's object for `method`, used for its weighting math (`get_cam_image`)
    on activations and gradients that `compute_cams` captures itself; the hooks its
    constructor puts on the network are removed at once."""
    engine = cam_class(method)(model=HeadLogits(task_net, target.head), target_layers=[target.layer])
    engine.activations_and_grads.release()
    return engine


def compute_cams(task_net: TaskNet, x: torch.Tensor, method: str = DEFAULT_METHOD,
                 categories: dict[str, int] | None = None) -> tuple[TaskOutput, dict[str, np.ndarray]]:
    """Every target's CAM (H×W in [0, 1] at the input's size) from ONE forward pass.

    Calling pytorch-grad-cam once per branch costs a forward and a full backward each (four
    of both, ~0.8 s on 2 cores); here one forward records every target layer's output and
    each CAM needs only the gradient from its logit back to its own layer, which stops at
    the heads. The maps are what `cam_class(method)(...)(x, targets)` gives (tested).
    `categories` picks the class per head (default: the head's top class); the forward's
    output is returned too, so the caller's probabilities come from the same pass.

    Not thread-safe on a shared network (it hooks its layers): callers hold the model's lock.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = cam_targets(task_net)
    captured: dict[str, torch.Tensor] = {}
    handles = [t.layer.register_forward_hook(lambda _m, _i, output, key=t.key: captured.__setitem__(key, output))
               for t in targets]
    try:
        with torch.enable_grad():
            out = task_net(x)
    finally:
        for handle in handles:
            handle.remove()
    size = (x.shape[-1], x.shape[-2])
    cams = {}
    for target in targets:
        logits = out.logits(target.head)
        category = (categories or {}).get(target.head)
        category = int(logits[0].argmax()) if category is None else int(category)
        engine = cam_engine(method, task_net, target)
        activation = captured[target.key]
        grads = None
        if engine.uses_gradients:
            grads = torch.autograd.grad(logits[0, category], activation, retain_graph=True)[0].numpy()
        cam = engine.get_cam_image(x, target.layer, [ClassifierOutputTarget(category)],
                                   activation.detach().numpy(), grads, False)
        # ReLU, resize and min-max scale, then scale again: BaseCAM's per-layer step followed
        # by its multi-layer aggregation (a mean over our one layer).
        scaled = scale_cam_image(scale_cam_image(np.maximum(cam, 0), size))
        cams[target.key] = np.nan_to_num(scaled[0]).astype(np.float32)
    return out, cams


def overlay(display: np.ndarray, cam: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The CAM as a heat map over the RGB uint8 display image; `opacity` is the heat map's weight."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    opacity = float(np.clip(opacity, 0.0, 1.0))
    if opacity == 0:  # show_cam_on_image rescales by the maximum, which would brighten the image
        return display
    h, w = display.shape[:2]
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return show_cam_on_image(display.astype(np.float32) / 255, cam.clip(0, 1), use_rgb=True, image_weight=1 - opacity)
