"""Stage II: update the Meta Learner φ through a pseudo-update of the Task Net θ.

    θ̃ = step(θ, ∇θ [L_d + L_q + L_ω(θ, y_ω(φ))])           (the optimiser's own step: `PseudoStep`)
    φ ← φ − β ∇φ [L_d(θ̃) + L_q(θ̃) + w·R(y_ω(φ))]

`PseudoStep` is the step `torch.optim.SGD.step()` takes — weight decay, momentum buffer,
dampening, Nesterov — so θ̃ is the θ the next Stage I step actually reaches (the official
first-order code adds the momentum buffer the same way).

Three scopes of the pseudo step:
- "network": θ̃ covers every Task Net parameter (the paper; `--preset paper`).
- "top": θ̃ covers the backbone's last stage (timm's last `feature_info` module), the branches,
  the Meta-knowledge Assistance Block and the heads, over the last stage's input held fixed
  (recorded during the Stage I forward on the same batch). The double backward through the
  early, high-resolution stages is most of the exact step's cost; the last stage carries most
  of the meta gradient's path through the shared features.
- "heads": θ̃ covers the branches, the MAB and the heads over the backbone's output held fixed:
  the meta gradient then reaches φ only through the auxiliary branch that the MAB feeds into
  the diagnosis.

Two orders: second order differentiates through the pseudo step (`create_graph`); first order
replaces the Hessian-vector product by a finite difference as in MAXL/DARTS:
    ∇φ L(θ̃) ≈ −α [∇φ L_ω(θ + εv, φ) − ∇φ L_ω(θ − εv, φ)] / 2ε,   v = ∇θ̃ (L_d + L_q)(θ̃).

Both evaluate the Task Net with `torch.func.functional_call` on its own forward (or its own
`forward_head`), on cloned BatchNorm buffers: θ, its gradients and its running statistics are
left exactly as they were.

The meta gradient is split at φ's logits: ∂/∂logits of the outer loss and of w·R are taken
apart, then one backward through φ carries their sum, so the share of the outer loss in what
drives φ (`meta_outer_share`, by norm) costs nothing extra.

A third, cheapest form (`aligned_meta_gradients`, the `cpu` preset's) expands L(θ̃) to first
order around θ itself: L(θ̃) ≈ L(θ) − α⟨v, ∇θ L_ω(θ, y)⟩ + (terms free of y), v = ∇θ (L_d + L_q)(θ),
so ∇y asks how the auxiliary loss's gradient aligns with the primary one's:
    ∇φ ≈ −α ∇φ [L_ω(θ + εv, y) − L_ω(θ, y)] / ε.
Stage I's own forward gives L_ω(θ, y) and its backward gives v, so Stage II adds one forward of
the Task Net and φ's own backward. (Momentum and weight decay enter θ̃ − θ without y: at this
order they drop out.)

On several ranks (`ranks`), each evaluates its share of the global batch; the pseudo-step
gradient, v, ȳ of the regulariser and finally ∇φ are averaged over ranks, the first three
through the differentiable all-reduce, so every rank ends with the one-process gradient of the
global batch (training/distributed.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from mkcnet.config import TRAIN_WORDS
from mkcnet.data.dataset import Batch
from mkcnet.losses import auxiliary_loss, entropy_regulariser
from mkcnet.models import MetaLearner, TaskNet
from mkcnet.models.meta_learner import mask_labels
from mkcnet.training.distributed import ONE_PROCESS, Ranks
from mkcnet.training.objective import task_losses

SCOPES = TRAIN_WORDS["meta_scope"]


@dataclass
class PseudoStep:
    """The update `torch.optim.SGD` would apply to a parameter, as a differentiable function.

        d = g + λθ;  b = μ·b₋₁ + (1 − τ)·d  (b = d on the first step);  θ̃ = θ − α·(d + μb if Nesterov else b)

    Example:
        >>> step = PseudoStep(lr=0.1)
        >>> step("w", torch.tensor([1.0]), torch.tensor([2.0]))
        tensor([0.8000])
    """

    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # momentum buffers by parameter name

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, module: nn.Module) -> PseudoStep:
        """The step `optimizer` will take next for `module`'s parameters (one SGD parameter group)."""
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise ValueError("the pseudo step models torch.optim.SGD with one parameter group")
        group = optimizer.param_groups[0]
        if group.get("maximize"):
            raise ValueError("the pseudo step does not model maximize=True")
        buffers = {}
        for name, p in module.named_parameters():
            buffer = optimizer.state.get(p, {}).get("momentum_buffer")
            if buffer is not None:
                buffers[name] = buffer
        return cls(group["lr"], group["weight_decay"], group["momentum"], group["dampening"], group["nesterov"],
                   buffers)

    def __call__(self, name: str, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        d = grad + self.weight_decay * theta if self.weight_decay else grad
        if self.momentum:
            previous = self.buffers.get(name)
            b = d if previous is None else self.momentum * previous + (1 - self.dampening) * d
            d = d + self.momentum * b if self.nesterov else b
        return theta - self.lr * d


def top_stage(task_net: TaskNet) -> tuple[str, nn.Module]:
    """The backbone's last feature stage: its name inside the backbone and the module (timm's
    `feature_info` names it; the feature wrapper spells its dots as underscores)."""
    name = task_net.backbone.feature_info.module_name(-1).replace(".", "_")
    return name, task_net.backbone.get_submodule(name)


class _Above(nn.Module):
    """The Task Net from a held point upwards: from the backbone's output (`stage=None`) or from
    the input of its last stage. `functional_call` runs this module's forward, which is the
    Task Net's own `forward_head` after that stage's own forward: no second definition."""

    def __init__(self, net: TaskNet, stage: str | None):
        super().__init__()
        self.net, self.stage = net, stage  # the stage by name, so it is looked up in the reparametrised net

    def forward(self, x: torch.Tensor):
        return self.net.forward_head(x if self.stage is None else self.net.backbone.get_submodule(self.stage)(x))


def held_input(task_net: TaskNet, scope: str, images: torch.Tensor) -> torch.Tensor:
    """What the scope holds fixed, computed without a graph: the backbone's output ("heads") or
    its last stage's input ("top")."""
    buffers = {n: b.clone() for n, b in task_net.backbone.named_buffers()}  # BN statistics left as they are
    seen: list[torch.Tensor] = []
    hook = top_stage(task_net)[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            fmap = functional_call(task_net.backbone, buffers, (images,))[-1]
    finally:
        hook.remove()
    return fmap if scope == "heads" else seen[-1]


def meta_gradients(task_net: TaskNet, meta: MetaLearner, batch: Batch, step: PseudoStep, entropy_weight: float,
                   gamma: float = 2.0, second_order: bool = True, scope: str = "network",
                   logits: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   fd_epsilon: float = 0.01, ranks: Ranks = ONE_PROCESS,
                   outer_weight: float = 1.0) -> tuple[list[torch.Tensor], dict[str, float]]:
    """∇φ of the meta objective; returns (gradients aligned with φ's trainable parameters, stats).

    `logits`: φ's raw outputs for this batch, attached to its graph (computed here when None).
    `features`: what scope "heads" / "top" holds fixed for this batch (`held_input`; computed here when None).
    `outer_weight`: the outer loss's weight (0: a control, φ driven by the regulariser alone)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown meta-step scope {scope!r}; choose from {SCOPES}")
    meta_length = task_net.config.meta_length
    if logits is None:
        logits = meta(batch.images)
    labels = mask_labels(meta.config, logits, batch.diagnosis, batch.quality)
    if scope == "network":
        net: nn.Module = task_net
        prefix, inputs = "", batch.images
        moving = [n for n, p in task_net.named_parameters() if p.requires_grad]
    else:
        stage = top_stage(task_net)[0] if scope == "top" else None
        net, prefix = _Above(task_net, stage), "net."
        inputs = (held_input(task_net, scope, batch.images) if features is None else features).detach()
        moving = [n for n, p in task_net.named_parameters() if p.requires_grad and (not n.startswith("backbone.")
                  or stage is not None and n.startswith(f"backbone.{stage}."))]
    theta = {prefix + n: p for n, p in task_net.named_parameters() if n in moving}
    buffers = {prefix + n: b.clone() for n, b in task_net.named_buffers()}  # the pseudo step must not move BN stats
    held = {prefix + n: p for n, p in task_net.named_parameters() if prefix + n not in theta}
    names = list(theta)

    def forward(params):
        return functional_call(net, (params | held, buffers), (inputs,))

    def losses(params, aux_labels):
        return task_losses(forward(params), batch, aux_labels, gamma, meta_length)

    inner = losses(theta, labels if second_order else labels.detach()).total
    grads = torch.autograd.grad(inner, [theta[n] for n in names], create_graph=second_order, allow_unused=True)
    grads = ranks.mean([torch.zeros_like(theta[n]) if g is None else g for n, g in zip(names, grads)])
    fast = {n: step(n[len(prefix):], theta[n], g) for n, g in zip(names, grads)}

    if second_order:
        outer = losses(fast, None).primary
        meta_term = outer
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
        meta_term = -step.lr * difference / (2 * eps)

    return _into_phi(meta, logits, labels, meta_term, outer, entropy_weight, outer_weight, ranks)


def aligned_meta_gradients(task_net: TaskNet, meta: MetaLearner, batch: Batch, logits: torch.Tensor,
                           primary: torch.Tensor, auxiliary_logits: torch.Tensor, lr: float,
                           entropy_weight: float, gamma: float = 2.0, fd_epsilon: float = 0.01,
                           ranks: Ranks = ONE_PROCESS, outer_weight: float = 1.0) -> tuple[list[torch.Tensor], dict]:
    """∇φ of the first-order expansion around θ (see the module docstring).

    `logits`: φ's outputs for the batch, attached to its graph; `primary`: L_d + L_q of the Task
    Net's forward at θ, with its graph (kept: Stage I backpropagates it afterwards);
    `auxiliary_logits`: the ω head's logits of the same forward, in fp32."""
    meta_length = task_net.config.meta_length
    names = [n for n, p in task_net.named_parameters() if p.requires_grad]
    theta = dict(task_net.named_parameters())
    grads = torch.autograd.grad(primary, [theta[n] for n in names], retain_graph=True, allow_unused=True)
    v = ranks.mean([torch.zeros_like(theta[n]) if g is None else g.detach() for n, g in zip(names, grads)])
    eps = fd_epsilon / (torch.sqrt(sum((g * g).sum() for g in v)) + 1e-12)
    buffers = {n: b.clone() for n, b in task_net.named_buffers()}
    with torch.no_grad():
        plus = functional_call(task_net, ({n: theta[n] + eps * g for n, g in zip(names, v)}, buffers),
                               (batch.images,)).auxiliary.float()
    labels = mask_labels(meta.config, logits, batch.diagnosis, batch.quality)
    difference = (auxiliary_loss(plus, labels, meta_length, gamma)
                  - auxiliary_loss(auxiliary_logits.detach().float(), labels, meta_length, gamma))
    meta_term = -lr * difference / eps
    return _into_phi(meta, logits, labels, meta_term, primary, entropy_weight, outer_weight, ranks)


def _into_phi(meta: MetaLearner, logits: torch.Tensor, labels: torch.Tensor, meta_term: torch.Tensor,
              outer: torch.Tensor, entropy_weight: float, outer_weight: float,
              ranks: Ranks) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Add the regulariser, split at φ's logits what the outer term and the regulariser each ask of
    them (the softmax inside the block already applied), and carry the sum through φ in one backward."""
    phi = [p for p in meta.parameters() if p.requires_grad]
    mean_label_entropy = -entropy_regulariser(labels, ranks.mean([labels.mean(dim=0)])[0])
    from_outer = outer_weight * _grad_at(meta_term, logits)
    from_regulariser = _grad_at(-entropy_weight * mean_label_entropy, logits)
    meta_grads = torch.autograd.grad(logits, phi, grad_outputs=from_outer + from_regulariser, allow_unused=True)
    meta_grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(phi, meta_grads)]
    with torch.no_grad():
        meta_grads = ranks.mean(meta_grads)
    return meta_grads, {"meta_outer": float(outer.detach()), "meta_entropy": float(mean_label_entropy.detach()),
                        "meta_outer_share": _share(from_outer, from_regulariser)}


def _share(from_outer: torch.Tensor, from_regulariser: torch.Tensor) -> float:
    outer, regulariser = float(from_outer.norm()), float(from_regulariser.norm())
    return outer / (outer + regulariser) if outer + regulariser > 0 else 0.0


def _grad_at(term: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if not term.requires_grad:
        return torch.zeros_like(logits)
    grad, = torch.autograd.grad(term, logits, retain_graph=True, allow_unused=True)
    return torch.zeros_like(logits) if grad is None else torch.nan_to_num(grad.detach())


def apply_meta_gradients(meta: MetaLearner, optimizer: torch.optim.Optimizer, grads: list[torch.Tensor]) -> None:
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip((p for p in meta.parameters() if p.requires_grad), grads):
        p.grad = g
    optimizer.step()


def meta_step(task_net: TaskNet, meta: MetaLearner, optimizer: torch.optim.Optimizer, batch: Batch, step: PseudoStep,
              entropy_weight: float, gamma: float, second_order: bool, scope: str = "network",
              logits: torch.Tensor | None = None, features: torch.Tensor | None = None,
              ranks: Ranks = ONE_PROCESS, outer_weight: float = 1.0) -> dict[str, float]:
    """One Stage II update of φ. Only φ's gradients are written; θ is untouched."""
    grads, stats = meta_gradients(task_net, meta, batch, step, entropy_weight, gamma, second_order, scope,
                                  logits=logits, features=features, ranks=ranks, outer_weight=outer_weight)
    apply_meta_gradients(meta, optimizer, grads)
    return stats
