"""Focal losses and the entropy regulariser of the auxiliary labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss, mean over the batch: -Σ_c y_c (1 - p_c)^γ log p_c.

    `target` is either class indices (B,) or a distribution (B×C) such as soft auxiliary labels.
    """
    if target.dim() == 1:
        target = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    # Half precision is lifted to fp32 for the loss; fp64 stays fp64 (the gradient checks need it).
    log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    weight = (1 - log_p.exp()).pow(gamma)
    # Zero targets contribute nothing, even where log p is -inf after masking.
    terms = torch.where(target > 0, target * weight * log_p, torch.zeros_like(log_p))
    return -terms.sum(dim=1).mean()


def auxiliary_loss(logits: torch.Tensor, soft_labels: torch.Tensor, meta_length: int, gamma: float = 2.0) -> torch.Tensor:
    """The auxiliary head's focal loss against the meta learner's soft labels, / meta_length."""
    return focal_loss(logits, soft_labels, gamma) / meta_length


def entropy_regulariser(soft_labels: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """R = Σ ȳ log ȳ (negative entropy) of the batch-mean auxiliary label distribution ȳ.

    Minimising R spreads the labels over the auxiliary classes so y_ω cannot collapse
    onto one sub-class per block. R is not a mean over images, so a data-parallel step passes
    the global batch's ȳ as `mean` (the ranks' means, all-reduced).
    """
    mean = soft_labels.mean(dim=0) if mean is None else mean
    return (mean * torch.log(mean + 1e-20)).sum()
