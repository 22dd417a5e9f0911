"""Baselines of the paper's Table 2 that wire the Task Net's parts differently.

`VanillaNet` is the official single-task baseline: backbone → global pooling → MLP, no branch.
CANet and DETACH reuse the Task Net's backbone, Global Attention Blocks and heads and override only its
fusion hooks, so they return the same `TaskOutput` (features, maps, attention) and every
evaluation, prediction and CAM tool works on them unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from mkcnet.models.attention import CrossTaskAttention
from mkcnet.models.task_net import TaskNet, TaskOutput, head


class VanillaNet(TaskNet):
    """The official VanillaNet: backbone → global average pooling → Linear(C, C) → ReLU →
    Linear(C, classes). No attention block, no projection, no quality or auxiliary head. (The
    official hidden width is 512, VGG16's C; here it follows the backbone's C.)

    Example:
        >>> from mkcnet.presets import build_run_config
        >>> net = VanillaNet(build_run_config("ct-iqad", "cpu", "vanilla").model)
        >>> sorted(name for name, _ in net.named_children())
        ['backbone', 'branches', 'heads']
    """

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.backbone = self.create_backbone()
        channels = self.backbone.feature_info.channels()[-1]
        self.branches = nn.ModuleDict()  # none: the CAM tools then explain the backbone's map alone
        self.assistance = None
        self.heads = nn.ModuleDict({"diagnosis": head(channels, channels, config.num_diagnosis, "relu")})

    def forward_head(self, fmap: torch.Tensor) -> TaskOutput:
        pooled = fmap.mean(dim=(2, 3))
        return TaskOutput(diagnosis=self.heads["diagnosis"](pooled), maps={"backbone": fmap},
                          features={"diagnosis": pooled, "fused": pooled, "backbone": pooled})


class CANet(TaskNet):
    """CANet (Li et al., 2019): task-specific attention branches (our GABs) whose features are
    exchanged by cross-task attention: each head reads its feature + the other's, channel-gated."""

    def build_fusion(self, dim: int) -> dict[str, int]:
        self.cross = nn.ModuleDict({"diagnosis": CrossTaskAttention(dim), "quality": CrossTaskAttention(dim)})
        return {}

    def head_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d, q = features["diagnosis"], features["quality"]
        return features | {"diagnosis": self.cross["diagnosis"](d, q), "quality": self.cross["quality"](q, d)}


class DetachNet(TaskNet):
    """DETACH (Liu et al., 2022): separate diagnosis and quality backbones; each head reads its own
    feature and the other task's *detached* one, so neither loss trains the other's backbone.

    The two backbone maps travel concatenated on the channel axis (`maps["backbone"]`), so the
    forward_features / forward_head split keeps its one-tensor interface."""

    def __init__(self, config):
        super().__init__(config)
        self.quality_backbone = self.create_backbone()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.backbone(x)[-1], self.quality_backbone(x)[-1]], dim=1)

    def branch_input(self, branch: str, fmap: torch.Tensor) -> torch.Tensor:
        diagnosis, quality = fmap.chunk(2, dim=1)
        return quality if branch == "quality" else diagnosis

    def build_fusion(self, dim: int) -> dict[str, int]:
        return {"diagnosis": 2 * dim, "quality": 2 * dim}

    def head_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d, q = features["diagnosis"], features["quality"]
        return features | {"diagnosis": torch.cat([d, q.detach()], 1), "quality": torch.cat([q, d.detach()], 1)}
