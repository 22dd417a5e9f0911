"""Task Net (θ): a timm backbone, three attention branches and three heads.

One forward definition. The meta step calls this same module through
`torch.func.functional_call`, so there is no second copy to drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch
from timm.layers import Mlp
from timm.layers.activations import HardSigmoid
from torch import nn

from mkcnet.config import ModelConfig
from mkcnet.models.attention import GlobalAttentionBlock, MetaKnowledgeAssistance

BRANCHES = ("diagnosis", "quality", "auxiliary")


@dataclass
class TaskOutput:
    """What one forward pass gives: logits per head, per-branch features, maps for CAMs.

    `features` has a vector per branch ("diagnosis", "quality", "auxiliary") plus "fused"
    (the diagnosis head's input); heads and branches a method lacks are absent / None.
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


def create_backbone(config: ModelConfig, name: str | None = None, **kwargs) -> nn.Module:
    """A timm backbone built from the config, never downloading weights. By default it gives
    its last feature map (spatial); the meta learner passes num_classes=0 for pooled features."""
    args = dict(config.backbone_args) | kwargs
    name = name or config.backbone
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
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dim = config.feature_dim
        stride = {"output_stride": config.output_stride} if config.output_stride else {}
        self.backbone = create_backbone(config, features_only=True, out_indices=(-1,), **stride)
        channels = self.backbone.feature_info.channels()[-1]
        active = ["diagnosis"]
        if config.use_quality:
            active.append("quality")
        if config.use_auxiliary:
            active.append("auxiliary")
        self.branches = nn.ModuleDict(
            {b: GlobalAttentionBlock(channels, dim, attention=config.use_attention) for b in active}
        )
        self.assistance = (
            MetaKnowledgeAssistance(dim, enabled=config.use_assistance) if config.use_auxiliary else None
        )
        fused_dim = dim * 2 if config.use_auxiliary else dim
        self.heads = nn.ModuleDict({"diagnosis": Mlp(fused_dim, dim, config.num_diagnosis)})
        if config.use_quality:
            self.heads["quality"] = Mlp(dim, dim, config.num_quality)
        if config.use_auxiliary:
            self.heads["auxiliary"] = Mlp(dim, dim, config.num_auxiliary)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward_head(self, fmap: torch.Tensor) -> TaskOutput:
        out = TaskOutput(diagnosis=fmap.new_empty(0), maps={"backbone": fmap})
        for name, branch in self.branches.items():
            out.maps[name], out.attention[name], out.features[name] = branch(fmap)
        fused = out.features["diagnosis"]
        if self.assistance is not None:
            fused = self.assistance(fused, out.features["auxiliary"])
        out.features["fused"] = fused
        out.diagnosis = self.heads["diagnosis"](fused)
        if "quality" in self.heads:
            out.quality = self.heads["quality"](out.features["quality"])
        if "auxiliary" in self.heads:
            out.auxiliary = self.heads["auxiliary"](out.features["auxiliary"])
        return out

    def forward(self, x: torch.Tensor) -> TaskOutput:
        return self.forward_head(self.forward_features(x))
