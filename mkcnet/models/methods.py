"""Methods: MKCNet, its first-order variant and the baselines, as switches on one Task Net.

A new baseline or ablation is one more `Method` entry (plus, for a genuinely different
architecture, a small module), never a copy of the model or the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mkcnet.config import ModelConfig, RunConfig
from mkcnet.models.meta_learner import MetaLearner
from mkcnet.models.task_net import TaskNet


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    quality: bool = True  # quality head and loss
    auxiliary: bool = True  # ω branch, assistance block, auxiliary head and loss
    meta_learner: bool = True  # soft auxiliary labels from φ (Stage II trains it)
    second_order: bool = True
    mask: str = "joint"
    attention: bool = True
    assistance: bool = True


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("vanilla", "diagnosis only: backbone + diagnosis branch and head",
               quality=False, auxiliary=False, meta_learner=False),
        Method("multitask", "diagnosis + quality heads on a shared backbone, no meta learner",
               auxiliary=False, meta_learner=False),
        Method("mkcnet", "MKCNet, exact second-order meta step"),
        Method("mkcnet-fo", "MKCNet, first-order (finite-difference) meta step", second_order=False),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def apply_method(config: RunConfig) -> RunConfig:
    """Set the model switches and the meta-step order that `config.model.method` implies."""
    method = get_method(config.model.method)
    m = config.model
    m.use_quality, m.use_auxiliary = method.quality, method.auxiliary
    m.use_attention, m.use_assistance, m.mask = method.attention, method.assistance, method.mask
    config.train.second_order = method.second_order
    return config


def build_networks(config: ModelConfig) -> tuple[TaskNet, MetaLearner | None]:
    method = get_method(config.method)
    meta = MetaLearner(config) if method.meta_learner else None
    return TaskNet(config), meta
