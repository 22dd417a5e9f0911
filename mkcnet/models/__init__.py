"""Model parts: attention blocks, the Task Net (θ), the Meta Learner (φ), and the method table."""

from mkcnet.models.meta_learner import MetaLearner, masked_softmax
from mkcnet.models.methods import METHODS, Method, apply_method, build_networks, get_method
from mkcnet.models.task_net import TaskNet, TaskOutput

__all__ = ["METHODS", "Method", "MetaLearner", "TaskNet", "TaskOutput", "apply_method", "build_networks",
           "get_method", "masked_softmax"]
