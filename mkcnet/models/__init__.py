"""Model parts: attention blocks, the Task Net (θ), the Meta Learner (φ), the baselines' own
architectures, and `build_networks`, which builds what a method (`mkcnet.methods`) asks for."""

from __future__ import annotations

from mkcnet.config import ModelConfig
from mkcnet.methods import get_method
from mkcnet.models.baselines import CANet, DetachNet, VanillaNet
from mkcnet.models.meta_learner import MetaLearner, masked_softmax
from mkcnet.models.task_net import TaskNet, TaskOutput

ARCHITECTURES: dict[str, type[TaskNet]] = {"task_net": TaskNet, "vanilla_net": VanillaNet, "canet": CANet,
                                           "detach": DetachNet}


def build_networks(config: ModelConfig) -> tuple[TaskNet, MetaLearner | None]:
    """The Task Net of the method's architecture, and its Meta Learner if it has one."""
    method = get_method(config.method)
    meta = MetaLearner(config) if method.meta_learner else None
    return ARCHITECTURES[method.architecture](config), meta


__all__ = ["ARCHITECTURES", "MetaLearner", "TaskNet", "TaskOutput", "build_networks", "masked_softmax"]
