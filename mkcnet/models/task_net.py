"""Task Net (θ): a timm backbone, three attention branches and three heads.

One forward definition. The meta step calls this same module through
`torch.func.functional_call`, so there is no second copy to drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch
from timm.layers import HardSigmoid, Mlp
from torch import nn

from mkcnet.config import ModelConfig
from mkcnet.models.attention import GlobalAttentionBlock, MetaKnowledgeAssistance


@dataclass
class TaskOutput:
    """What one forward pass gives: logits per head, per-branch features, maps for CAMs.

    `features` has a vector per branch ("diagnosis", "quality", "auxiliary") plus "fused"
    (the diagnosis head's input) and "backbone" (the shared map, globally averaged: what the
    out-of-distribution guard measures); heads and branches a method lacks are absent / None.
    `maps` holds each branch's attended B×C×h×w map, `attention` its B×1×h×w spatial gate,
    and `maps["backbone"]` the shared feature map.
    """

    diagnosis: torch.Tensor
    quality: torch.Tensor | None = None
    auxiliary: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)

    def logits(self, head: str) -> torch.Tensor | None:
        return getattr(self, head)


HEAD_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def head(in_features: int, hidden: int, out_features: int, act: str = "relu") -> nn.Module:
    """Linear → activation → Linear, the official heads' shape."""
    return Mlp(in_features, hidden, out_features, act_layer=HEAD_ACTIVATIONS[act])


def create_backbone(config: ModelConfig, name: str | None = None, **kwargs) -> nn.Module:
    """A timm backbone built from the config, never downloading weights. `backbone_args` (e.g.
    the cpu preset's ResNet widths) apply to the configured backbone only, not to another net
    named for the meta learner."""
    name = name or config.backbone
    args = (dict(config.backbone_args) if name == config.backbone else {}) | kwargs
    try:
        net = timm.create_model(name, pretrained=False, in_chans=config.in_chans, **args)
    except RuntimeError as err:  # timm raises RuntimeError for unknown names
        raise ValueError(f"unknown backbone {name!r}: {err}") from None
    return twice_differentiable(net)


def twice_differentiable(net: nn.Module) -> nn.Module:
    """Swap activations whose native kernels have no double backward (the exact second-order
    meta step needs one) for timm's equivalent pure-PyTorch versions."""
    for parent in list(net.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Hardsigmoid):
                setattr(parent, child_name, HardSigmoid())
    return net


class TaskNet(nn.Module):
    """Backbone → one Global Attention Block per task branch → fusion → heads.

    Other architectures (CANet, DETACH in `baselines.py`) subclass it and change only the hooks:
    `forward_features` (the backbone map), `branch_input` (what each branch reads) and
    `build_fusion` / `head_inputs` (how branch features mix into each head's input).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.backbone = self.create_backbone()
        channels = self.backbone.feature_info.channels()[-1]
        active = ["diagnosis"]
        if config.use_quality:
            active.append("quality")
        if config.use_auxiliary:
            active.append("auxiliary")
        self.branches = nn.ModuleDict(
            {b: GlobalAttentionBlock(channels, dim, attention=config.use_attention) for b in active}
        )
        widths = self.build_fusion(dim)
        classes = {"diagnosis": config.num_diagnosis, "quality": config.num_quality,
                   "auxiliary": config.num_auxiliary}
        self.heads = nn.ModuleDict({b: head(widths.get(b, dim), dim, classes[b], config.head_act) for b in active})

    def create_backbone(self) -> nn.Module:
        stride = {"output_stride": self.config.output_stride} if self.config.output_stride else {}
        return create_backbone(self.config, features_only=True, out_indices=(-1,), **stride)

    def build_fusion(self, dim: int) -> dict[str, int]:
        """Make the modules that mix branch features; return the input width of heads wider than `dim`."""
        use = self.config.use_auxiliary and self.config.use_assistance
        self.assistance = MetaKnowledgeAssistance(dim) if use else None
        return {"diagnosis": 2 * dim} if use else {}

    def head_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each head's input: its branch feature; MKCNet's diagnosis head also reads the auxiliary one."""
        if self.assistance is None:
            return features
        return features | {"diagnosis": self.assistance(features["diagnosis"], features["auxiliary"])}

    def branch_input(self, branch: str, fmap: torch.Tensor) -> torch.Tensor:
        return fmap

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward_head(self, fmap: torch.Tensor) -> TaskOutput:
        out = TaskOutput(diagnosis=fmap.new_empty(0), maps={"backbone": fmap})
        for name, branch in self.branches.items():
            out.maps[name], out.attention[name], out.features[name] = branch(self.branch_input(name, fmap))
        inputs = self.head_inputs(out.features)
        out.features["fused"] = inputs["diagnosis"]
        for name, head in self.heads.items():
            setattr(out, name, head(inputs[name]))
        out.features["backbone"] = fmap.mean(dim=(2, 3))
        return out

    def forward(self, x: torch.Tensor) -> TaskOutput:
        return self.forward_head(self.forward_features(x))
