"""Multi-task baselines of the paper's Table 2 that wire the Task Net's parts differently.

Both reuse the Task Net's backbone, Global Attention Blocks and heads and override only its
fusion hooks, so they return the same `TaskOutput` (features, maps, attention) and every
evaluation, prediction and CAM tool works on them unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from mkcnet.models.attention import CrossTaskAttention
from mkcnet.models.task_net import TaskNet


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
