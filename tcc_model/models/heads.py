"""Context heads: ``context_features [N, k, C, h, w]`` (oldest first) -> ``embeddings [N, D]``."""

from __future__ import annotations

import torch
from torch import nn


class PaperConv3dHead(nn.Module):
    """The reference ``ConvEmbedder``: 2×[Conv3d 3³ + BN + ReLU] → global 3-D max pool →
    2×[dropout, FC, ReLU] → linear ``embedding_size``. No L2 normalisation."""

    def __init__(
        self,
        in_channels: int,
        embedding_size: int = 128,
        channels: int = 512,
        fc_channels: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )
        self.fcs = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels, fc_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_channels, fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(fc_channels, embedding_size),
        )
        for m in self.convs.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, context_features: torch.Tensor) -> torch.Tensor:
        x = self.convs(context_features.transpose(1, 2))  # [N, C, k, h, w]
        x = torch.amax(x, dim=(2, 3, 4))
        return self.fcs(x)


class LightHead(nn.Module):
    """Cheap context head: 1×1 reduce per frame → Conv3d over all k frames (3×3 spatial) →
    global max pool → FC → linear ``embedding_size``."""

    def __init__(
        self,
        in_channels: int,
        context_frames: int,
        embedding_size: int = 128,
        channels: int = 128,
        fc_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        reduced = max(channels // 2, 16)
        self.reduce = nn.Sequential(
            nn.Conv3d(in_channels, reduced, 1, bias=False),
            nn.BatchNorm3d(reduced),
            nn.ReLU(inplace=True),
        )
        self.temporal = nn.Sequential(
            nn.Conv3d(reduced, channels, (context_frames, 3, 3), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )
        self.fcs = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels, fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(fc_channels, embedding_size),
        )

    def forward(self, context_features: torch.Tensor) -> torch.Tensor:
        x = self.temporal(self.reduce(context_features.transpose(1, 2)))  # [N, C, 1, h, w]
        x = torch.amax(x, dim=(2, 3, 4))
        return self.fcs(x)
