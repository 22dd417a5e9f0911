"""Class activation maps per feature branch, with pytorch-grad-cam's CAM methods.

A `CamTarget` names a layer (a "tap") and the head whose logits it explains:

- diagnosis / quality / auxiliary ω: the branch's attended map (`branches[b].attended`, an
  identity placed there for this) with that branch's own head;
- fused diagnosis: the shared backbone's last feature map with the diagnosis head; the fused
  feature combines the diagnosis and ω branches, and both are fed by that map.

All maps come from ONE forward pass: pytorch-grad-cam's `ActivationsAndGradients` records
every tap's output with its graph kept (`detach=False`); each map then needs only the
gradient of its head's scores back to its own tap, which stops at the heads. The weighting is
the chosen method's own `get_cam_image`, followed by the same ReLU / resize / min-max scaling
that `BaseCAM` applies, so the maps equal calling the method once per branch (tested) at a
quarter of the cost. The class explained is each image's top class unless one is given.

This reaches past the library's documented entry point (calling a CAM object on a model): it
uses `ActivationsAndGradients` and calls `get_cam_image` positionally on a CAM built over no
layers. Both are internals of grad-cam, pinned below 1.6 in pyproject.toml and named as
exceptions in tests/test_layout.py; tests/test_cam.py compares every map with the library's own
per-branch call, so a change of those internals fails a test rather than a reading.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from mkcnet.branches import BRANCHES, SHARED_BACKBONE
from mkcnet.errors import UserError
from mkcnet.models import TaskNet, TaskOutput
from mkcnet.progress import Report

if TYPE_CHECKING:
    from pytorch_grad_cam.base_cam import BaseCAM

# Shown name → pytorch-grad-cam class. The library is imported on first use: it pulls in
# OpenCV, scikit-learn and more. Score-CAM and Ablation-CAM are left out: one forward pass per
# channel (384 here) is far beyond the one-second budget on a CPU.
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


class HeadLogits(nn.Module):
    """Adapter: the Task Net with one head's logits as its output (what pytorch-grad-cam expects)."""

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
    label: str = ""  # what the page calls it


def fused_label(task_net: TaskNet) -> str:
    """The backbone-level diagnosis map is a *fused* map only where the diagnosis head reads the
    ω feature too (the Meta-knowledge Assistance Block); elsewhere it is the shared backbone's."""
    c = task_net.config
    return (BRANCHES["fused"] if c.use_auxiliary and c.use_assistance else SHARED_BACKBONE).cam_label


def backbone_output_layer(task_net: TaskNet) -> nn.Module:
    """The module whose output is the backbone's final feature map. timm's feature wrappers
    return a list, which cannot be hooked as one map, so we take their last stage."""
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
    targets = [CamTarget(b, b, branch.attended, BRANCHES[b].cam_label) for b, branch in task_net.branches.items()]
    return targets + [CamTarget("fused", "diagnosis", backbone_output_layer(task_net), fused_label(task_net))]


@dataclass(frozen=True)
class BranchCams:
    """The forward pass's output, each target's maps (N×H×W in [0, 1] at the input's size, on
    the CPU) and, per head, the class each image's maps explain."""

    output: TaskOutput
    maps: dict[str, np.ndarray]
    categories: dict[str, np.ndarray]


def _categories(logits: torch.Tensor, chosen: int | Sequence[int] | None) -> np.ndarray:
    if chosen is None:
        return logits.detach().argmax(1).cpu().numpy()
    return np.broadcast_to(np.asarray(chosen, dtype=np.int64), (logits.shape[0],)).copy()


def compute_cams(task_net: TaskNet, x: torch.Tensor, method: str = DEFAULT_METHOD,
                 categories: Mapping[str, int | Sequence[int]] | None = None) -> BranchCams:
    """Every target's CAMs for a batch `x` (N×C×H×W, moved to the network's device) from one
    forward pass. `categories` picks the class per head (one for all images, or one each).

    Not thread-safe on a shared network (it hooks its layers): callers hold the model's lock.
    """
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method_class = cam_class(method)
    x = x.to(next(task_net.parameters()).device)
    targets = cam_targets(task_net)
    # One recorder per tap, so each activation is found by its target, whatever order the
    # taps run in; all of them record during the same single forward pass.
    recorders = {t.key: ActivationsAndGradients(task_net, [t.layer], None, detach=False) for t in targets}
    try:
        with torch.enable_grad():
            output = task_net(x)
        size = (x.shape[-1], x.shape[-2])
        maps, chosen = {}, {}
        for target in targets:
            logits = output.logits(target.head)
            if target.head not in chosen:
                chosen[target.head] = _categories(logits, (categories or {}).get(target.head))
            classes = chosen[target.head]
            # Built over no layers, the method object hooks nothing: it lends its weighting only.
            weighting = method_class(model=HeadLogits(task_net, target.head), target_layers=[])
            activation = recorders[target.key].activations[0]
            grads = None
            if weighting.uses_gradients:
                score = logits.gather(1, torch.as_tensor(classes, device=logits.device)[:, None]).sum()
                grads = torch.autograd.grad(score, activation, retain_graph=True)[0].detach().cpu().numpy()
            # Positional, as BaseCAM itself calls it: subclasses name the third parameter differently.
            cam = weighting.get_cam_image(x, target.layer, [ClassifierOutputTarget(int(c)) for c in classes],
                                          activation.detach().cpu().numpy(), grads, False)
            # BaseCAM's per-layer step (ReLU, resize, min-max) then its aggregation over our one layer.
            scaled = scale_cam_image(scale_cam_image(np.maximum(cam, 0), size))
            maps[target.key] = np.nan_to_num(scaled).astype(np.float32)
    finally:
        for recorder in recorders.values():
            recorder.release()
    return BranchCams(output, maps, chosen)


def overlay(display: np.ndarray, cam: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The CAM as a heat map over an RGB uint8 image; `opacity` is the heat map's weight."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    opacity = float(np.clip(opacity, 0.0, 1.0))
    if opacity == 0:  # show_cam_on_image rescales by the maximum, which would brighten the image
        return display
    h, w = display.shape[:2]
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return show_cam_on_image(display.astype(np.float32) / 255, cam.clip(0, 1), use_rgb=True, image_weight=1 - opacity)


# ---- `mkcnet cam`: the maps of many images, as files for a researcher's figures -----------------

@dataclass(frozen=True)
class CamFiles:
    written: list[dict]  # one row per image and target: image, branch, explained class, png, npy
    errors: list[tuple[str, str]]  # (file name, why it was skipped)


def save_cams(checkpoint, files: Sequence, out, method: str = DEFAULT_METHOD, opacity: float = 0.5,
              device: str = "auto", batch_size: int = 16, display_size: int = 256,
              report: Report | None = None) -> CamFiles:
    """Each image's maps for every target: `<stem>.<target>.png` (the heat map over the image the
    model sees, `display_size` px) and `<stem>.<target>.npy` (the raw map at the model's input
    size, float32 in [0, 1]), plus `cams.csv` listing them. Unreadable files are skipped and
    reported; nothing else stops the batch. `report` (share done, step)
    hears each step: reading the images, then the maps batch by batch."""
    from pathlib import Path

    import pandas as pd

    from mkcnet.checkpoint import LoadedModel, load_checkpoint
    from mkcnet.data.dataset import normalise
    from mkcnet.data.images import load_resized
    from mkcnet.device import resolve_device

    model = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    config = model.config.model
    task_net = model.task_net.to(resolve_device(device)).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"diagnosis": config.diagnosis_names, "quality": config.quality_names}
    readable, errors = [], []
    files = list(map(Path, files))
    for k, f in enumerate(files):
        if report is not None:
            report(0.2 * k / len(files), f"reading {len(files)} image(s)")
        try:
            readable.append((f, load_resized(f, config.input)))
        except UserError as err:
            errors.append((f.name, str(err)))
    stems: dict[str, int] = {}
    written = []
    for start in range(0, len(readable), batch_size):
        chunk = readable[start:start + batch_size]
        if report is not None:
            report(0.2 + 0.8 * start / len(readable), f"maps of {len(readable)} image(s) ({method})")
        images = torch.from_numpy(np.stack([a for _, a in chunk]))
        cams = compute_cams(task_net, normalise(images, config.input), method)
        for i, (path, array) in enumerate(chunk):
            seen = stems.get(path.stem, 0)
            stems[path.stem] = seen + 1
            stem = path.stem if not seen else f"{path.stem}-{seen}"  # two inputs may share a name
            display = _display(array, display_size)
            for target in cam_targets(task_net):
                k = int(cams.categories[target.head][i])
                explained = names.get(target.head) or ()
                explained = explained[k] if k < len(explained) else f"class {k}"
                png, npy = out / f"{stem}.{target.key}.png", out / f"{stem}.{target.key}.npy"
                Image.fromarray(overlay(display, cams.maps[target.key][i], opacity)).save(png)
                np.save(npy, cams.maps[target.key][i])
                written.append({"image": str(path), "target": target.key, "head": target.head, "class": explained,
                                "png": png.name, "npy": npy.name})
    if written:
        pd.DataFrame(written).to_csv(out / "cams.csv", index=False)
    return CamFiles(written, errors)


def _display(chw: np.ndarray, size: int) -> np.ndarray:
    """The model's input image (C×S×S uint8) as RGB at `size` px."""
    image = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)).convert("RGB")
    return np.asarray(image.resize((size, size), Image.BILINEAR))
