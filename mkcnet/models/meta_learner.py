"""Meta Learner (φ), the joint-encoding mask (JEM), and fixed random labels for the ablation.

The meta learner predicts soft auxiliary labels y_ω. Under the JEM, a sample with diagnosis d
and quality q belongs to the joint class m = q·num_diagnosis + d, and its label is a softmax
over block m's `meta_length` sub-classes only (exactly 0 elsewhere). The other masks exist for
the ablations: "diagnosis" (MAXL: blocks by diagnosis), "quality", and "none" (one block).
All masks split the same Σψ auxiliary classes, so ablations compare equal-sized heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mkcnet.config import ModelConfig
from mkcnet.models.task_net import create_backbone, head

MASKS = ("joint", "diagnosis", "quality", "none")


def num_blocks(mask: str, num_diagnosis: int, num_quality: int) -> int:
    return {"joint": num_diagnosis * num_quality, "diagnosis": num_diagnosis, "quality": num_quality,
            "none": 1}[mask]


def block_index(mask: str, diagnosis: torch.Tensor, quality: torch.Tensor, num_diagnosis: int) -> torch.Tensor:
    """Which block of auxiliary classes each sample may use."""
    if mask == "joint":
        return quality * num_diagnosis + diagnosis
    if mask == "diagnosis":
        return diagnosis
    if mask == "quality":
        return quality
    if mask == "none":
        return torch.zeros_like(diagnosis)
    raise ValueError(f"unknown mask {mask!r}; choose from {MASKS}")


def block_size(config: ModelConfig) -> int:
    """Auxiliary classes per block: Σψ split evenly over the mask's blocks."""
    return config.num_auxiliary // num_blocks(config.mask, config.num_diagnosis, config.num_quality)


def masked_softmax(logits: torch.Tensor, block: torch.Tensor, block_size: int) -> torch.Tensor:
    """Softmax of each row restricted to columns [block·size, (block+1)·size)."""
    owner = torch.arange(logits.shape[1], device=logits.device) // block_size
    allowed = owner[None, :] == block[:, None]
    return logits.masked_fill(~allowed, float("-inf")).softmax(dim=1)


def mask_labels(config: ModelConfig, logits: torch.Tensor, diagnosis: torch.Tensor,
                quality: torch.Tensor) -> torch.Tensor:
    """Soft auxiliary labels (B×Σψ) from logits: a softmax inside each sample's block, zero elsewhere."""
    block = block_index(config.mask, diagnosis, quality, config.num_diagnosis)
    return masked_softmax(logits, block, block_size(config))


class MetaLearner(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.mask not in MASKS:
            raise ValueError(f"unknown mask {config.mask!r}; choose from {MASKS}")
        self.config = config
        # As the official Meta Learner, for every backbone: its last feature map, global average
        # pooling, then Linear(C, C) → ReLU → Linear(C, Σψ). (timm's own classifier stem is not
        # used: for VGG16-BN it is a 7×7 conv 512→4096 and a 1×1 conv 4096→4096, 120 M parameters.)
        self.backbone = create_backbone(config, config.meta_backbone, features_only=True, out_indices=(-1,))
        width = self.backbone.feature_info.channels()[-1]
        self.head = head(width, width, config.num_auxiliary, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.meta_image_size
        if size and x.shape[-1] != size:  # a cheaper input: φ's labels need no fine detail
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))

    def labels(self, x: torch.Tensor, diagnosis: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """Soft auxiliary labels y_ω (B×Σψ), zero outside each sample's block."""
        return mask_labels(self.config, self(x), diagnosis, quality)


class RandomLabels:
    """The "without Meta Learner" ablation: fixed auxiliary labels that nothing learns.

    Each training image (by its row in the training split) owns one random soft label, drawn once
    from the seed as a softmax of standard-normal logits inside the block its mask allows, so the
    auxiliary task keeps the JEM's structure but carries no learned meta-knowledge. Per image,
    not per joint class: one label per class would merely re-encode (diagnosis, quality), which
    the quality head already learns."""

    def __init__(self, config: ModelConfig, num_images: int, seed: int):
        self.config = config
        self.logits = torch.randn(num_images, config.num_auxiliary, generator=torch.Generator().manual_seed(seed))

    def labels(self, index: torch.Tensor, diagnosis: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        logits = self.logits[index.cpu()].to(diagnosis.device)
        return mask_labels(self.config, logits, diagnosis, quality)
