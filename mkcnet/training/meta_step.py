"""Stage II: update the Meta Learner φ through a pseudo-update of the Task Net θ.

    θ̃ = θ − α (∇θ [L_d + L_q + L_ω(θ, y_ω(φ))] + λ θ)      (α: current LR, λ: weight decay)
    φ ← φ − β ∇φ [L_d(θ̃) + L_q(θ̃) + w·R(y_ω(φ))]

Second order differentiates through the pseudo step (`create_graph`). First order replaces
the Hessian-vector product by a finite difference as in MAXL/DARTS:
    ∇φ L(θ̃) ≈ −α [∇φ L_ω(θ + εv, φ) − ∇φ L_ω(θ − εv, φ)] / 2ε,   v = ∇θ̃ (L_d + L_q)(θ̃).

Both evaluate the Task Net with `torch.func.functional_call` on its own forward, on cloned
BatchNorm buffers: θ, its gradients and its running statistics are left exactly as they were.

On several ranks (`ranks`), each evaluates its share of the global batch; the pseudo-step
gradient, v, ȳ of the regulariser and finally ∇φ are averaged over ranks, the first three
through the differentiable all-reduce, so every rank ends with the one-process gradient of the
global batch (training/distributed.py).
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from mkcnet.data.dataset import Batch
from mkcnet.losses import auxiliary_loss, entropy_regulariser
from mkcnet.models import MetaLearner, TaskNet
from mkcnet.training.distributed import ONE_PROCESS, Ranks
from mkcnet.training.objective import task_losses


def meta_gradients(task_net: TaskNet, meta: MetaLearner, batch: Batch, lr: float, weight_decay: float,
                   entropy_weight: float, gamma: float = 2.0, second_order: bool = True,
                   fd_epsilon: float = 0.01, ranks: Ranks = ONE_PROCESS) -> tuple[list[torch.Tensor], dict[str, float]]:
    """∇φ of the meta objective; returns (gradients aligned with meta.parameters(), stats)."""
    meta_length = task_net.config.meta_length
    names = [n for n, p in task_net.named_parameters() if p.requires_grad]
    theta = dict(task_net.named_parameters())
    buffers = {n: b.clone() for n, b in task_net.named_buffers()}  # the pseudo step must not move BN stats
    phi = [p for p in meta.parameters() if p.requires_grad]

    def forward(params):
        return functional_call(task_net, (params, buffers), (batch.images,))

    def losses(params, labels):
        return task_losses(forward(params), batch, labels, gamma, meta_length)

    labels = meta.labels(batch.images, batch.diagnosis, batch.quality)
    regulariser = entropy_regulariser(labels, ranks.mean([labels.mean(dim=0)])[0])
    inner = losses(theta, labels if second_order else labels.detach()).total
    grads = torch.autograd.grad(inner, [theta[n] for n in names], create_graph=second_order, allow_unused=True)
    grads = ranks.mean([torch.zeros_like(theta[n]) if g is None else g for n, g in zip(names, grads)])
    fast = {n: theta[n] - lr * (g + weight_decay * theta[n]) for n, g in zip(names, grads)}

    if second_order:
        outer = losses(fast, None).primary
        meta_grads = torch.autograd.grad(outer + entropy_weight * regulariser, phi, allow_unused=True)
    else:
        fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
        outer = losses(fast, None).primary
        v = torch.autograd.grad(outer, [fast[n] for n in names], allow_unused=True)
        v = ranks.mean([torch.zeros_like(theta[n]) if g is None else g for n, g in zip(names, v)])
        eps = fd_epsilon / (torch.sqrt(sum((g * g).sum() for g in v)) + 1e-12)
        with torch.no_grad():
            plus = forward({n: theta[n] + eps * g for n, g in zip(names, v)}).auxiliary
            minus = forward({n: theta[n] - eps * g for n, g in zip(names, v)}).auxiliary
        difference = auxiliary_loss(plus, labels, meta_length, gamma) - auxiliary_loss(minus, labels, meta_length, gamma)
        objective = -lr * difference / (2 * eps) + entropy_weight * regulariser
        meta_grads = torch.autograd.grad(objective, phi, allow_unused=True)

    meta_grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(phi, meta_grads)]
    with torch.no_grad():
        meta_grads = ranks.mean(meta_grads)
    return meta_grads, {"meta_outer": float(outer.detach()), "meta_entropy": float(-regulariser.detach())}


def meta_step(task_net: TaskNet, meta: MetaLearner, optimizer: torch.optim.Optimizer, batch: Batch, lr: float,
              weight_decay: float, entropy_weight: float, gamma: float, second_order: bool,
              ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
    """One Stage II update of φ. Only φ's gradients are written; θ is untouched."""
    grads, stats = meta_gradients(task_net, meta, batch, lr, weight_decay, entropy_weight, gamma, second_order,
                                  ranks=ranks)
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip((p for p in meta.parameters() if p.requires_grad), grads):
        p.grad = g
    optimizer.step()
    return stats
