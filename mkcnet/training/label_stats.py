"""What the Meta Learner's labels carry: the information inside each (diagnosis, quality) block.

Under the joint-encoding mask an image's auxiliary label is a distribution over its block's ψ
sub-classes. Which block it is in is known from its labels; what φ adds is how images *within*
a block are spread over the sub-classes. `aux_mi` measures exactly that:

    I_b = H(mean label of block b) − mean over b's images of H(label)     (nats, 0 … log ψ)

averaged over the blocks present. It is 0 when every image of a block gets the same label
(uniform or not), and log ψ when the labels are one-hot and spread evenly over the sub-classes.
The batch-mean entropy that Stage II's regulariser sees cannot tell these apart.
"""

from __future__ import annotations

import numpy as np
import torch

from mkcnet.models.meta_learner import block_index, block_size


def aux_mutual_information(labels: np.ndarray | torch.Tensor, block: np.ndarray | torch.Tensor,
                           block_size: int) -> float:
    """Mean over blocks of I(image; sub-class | block), in nats.

    `labels`: N×Σψ distributions (zero outside each row's block, or not: the block's columns are
    taken and renormalised); `block`: each row's block index.

    Example:
        >>> import numpy as np
        >>> one_hot = np.eye(4)[[0, 1, 2, 3]]           # one block of ψ = 4, spread evenly
        >>> round(aux_mutual_information(one_hot, np.zeros(4, int), 4), 4)   # log 4
        1.3863
    """
    labels = np.asarray(torch.as_tensor(labels).detach().double().cpu())
    block = np.asarray(torch.as_tensor(block).cpu())
    values = []
    for b in np.unique(block):
        rows = labels[block == b][:, b * block_size:(b + 1) * block_size]
        rows = rows / np.clip(rows.sum(axis=1, keepdims=True), 1e-300, None)
        values.append(_entropy(rows.mean(axis=0)) - float(np.mean([_entropy(r) for r in rows])))
    return float(np.mean(values)) if values else 0.0


def mean_entropy(labels: np.ndarray | torch.Tensor) -> float:
    """Mean per-image entropy of the labels, nats (log ψ for labels uniform inside their block)."""
    labels = np.asarray(torch.as_tensor(labels).detach().double().cpu())
    return float(np.mean([_entropy(r) for r in labels])) if len(labels) else 0.0


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def meta_label_stats(meta, batches, device: torch.device, channels_last: bool = True) -> dict[str, float]:
    """`aux_mi` and the mean per-image entropy (`aux_entropy`) of φ's labels over `batches`
    (φ in eval mode: its running BatchNorm statistics, as at inference)."""
    was_training = meta.training
    meta.eval()
    labels, blocks = [], []
    try:
        for batch in batches:
            x = batch.images.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            d, q = batch.diagnosis.to(device), batch.quality.to(device)
            labels.append(meta.labels(x, d, q).float().cpu())
            blocks.append(block_index(meta.config.mask, d, q, meta.config.num_diagnosis).cpu())
    finally:
        meta.train(was_training)
    if not labels:
        return {}
    y, block = torch.cat(labels), torch.cat(blocks)
    return {"aux_mi": aux_mutual_information(y, block, block_size(meta.config)), "aux_entropy": mean_entropy(y)}


def head_mutual_information(auxiliary_probs: np.ndarray, diagnosis: np.ndarray, quality: np.ndarray,
                            config) -> float:
    """`aux_mutual_information` of the Task Net's ω head (its softmax, restricted to each image's
    true block): how much of φ's within-block structure the head reproduces."""
    diagnosis, quality = torch.tensor(np.asarray(diagnosis)), torch.tensor(np.asarray(quality))
    block = block_index(config.mask, diagnosis, quality, config.num_diagnosis)
    known = (quality >= 0).numpy()
    return aux_mutual_information(np.asarray(auxiliary_probs)[known], block.numpy()[known], block_size(config))

