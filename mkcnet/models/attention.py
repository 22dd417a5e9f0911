"""The attention parts of the Task Net, built on timm's CBAM layers.

Global Attention Block (GAB): channel attention then spatial attention on the *spatial*
feature map, then global pooling and a projection. The official code pools to 1x1 before
attention, which turns its spatial attention into a no-op and makes per-branch CAMs
impossible; we keep the map spatial so both work.
"""

from __future__ import annotations

import torch
from timm.layers import SEModule
from timm.layers.cbam import ChannelAttn, SpatialAttn
from torch import nn


class SpatialGate(SpatialAttn):
    """timm's CBAM spatial attention with its gate map exposed (for visualisation)."""

    def gate_map(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.gate(self.conv(pooled))


class GlobalAttentionBlock(nn.Module):
    """Channel + spatial attention on a B×C×H×W map, then pool and project to a feature vector.

    Returns (attended map, spatial attention map B×1×H×W, feature B×D). With `attention=False`
    (the "without GAB" ablation) the map passes through and the attention map is all ones.
    """

    def __init__(self, in_channels: int, out_features: int, attention: bool = True):
        super().__init__()
        self.channel = ChannelAttn(in_channels) if attention else nn.Identity()
        self.spatial = SpatialGate() if attention else None
        # An identity the CAM tools hook onto: the branch's own attended map.
        self.attended = nn.Identity()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_features), nn.BatchNorm1d(out_features), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.channel(x)
        if self.spatial is not None:
            gate = self.spatial.gate_map(x)
            x = x * gate
        else:
            gate = x.new_ones(x.shape[0], 1, *x.shape[2:])
        x = self.attended(x)
        return x, gate, self.proj(x.mean(dim=(2, 3)))


class VectorAttention(nn.Module):
    """timm's squeeze-and-excitation channel gate, applied to a B×D feature vector."""

    def __init__(self, features: int):
        super().__init__()
        self.attn = SEModule(features, rd_ratio=1 / 4)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x[:, :, None, None]).flatten(1)


class MetaKnowledgeAssistance(VectorAttention):
    """Meta-knowledge Assistance Block: channel attention over the auxiliary (ω) feature; the
    result is concatenated with the diagnosis feature to form the fused diagnosis feature."""

    def forward(self, diagnosis: torch.Tensor, auxiliary: torch.Tensor) -> torch.Tensor:
        return torch.cat([diagnosis, self.gate(auxiliary)], dim=1)


class CrossTaskAttention(VectorAttention):
    """CANet's disease-dependent attention: a task's feature plus the other task's feature,
    channel-attended (Li et al., 2019, as in the MKCNet authors' baseline code)."""

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return own + self.gate(other)
