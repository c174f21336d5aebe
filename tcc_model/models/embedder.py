"""The :class:`Embedder` (encoder + head) and :func:`build_model`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tcc_model.models.config import ModelConfig
from tcc_model.models.encoders import LightEncoder, ResNet50Conv4cEncoder, VGGMEncoder, _Encoder
from tcc_model.models.heads import LightHead, PaperConv3dHead


class Embedder(nn.Module):
    """Per-frame ``encoder`` + context ``head``; see the module docstring for shapes."""

    def __init__(self, encoder: nn.Module, head: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.cfg = cfg
        self.context_frames = cfg.context_frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, H, W, 3]`` RGB 0..255 → per-frame features ``[N, C, h, w]``."""
        return self.encoder(frames)

    def embed(self, context_features: torch.Tensor) -> torch.Tensor:
        """``[N, k, C, h, w]`` context features (oldest first) → embeddings ``[N, D]``."""
        return self.head(context_features)

    def forward(self, frames: torch.Tensor, frame_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T*k, H, W, 3]`` (k consecutive context frames per step) → ``[B, T, D]``.

        ``frame_ids [B, T*k]`` (training only): each frame's index in its video; frames of a
        video with equal ids are equal, and each distinct one is encoded once (see
        :func:`distinct_positions`). In training mode BatchNorm then normalises with the
        statistics of the distinct frames.
        """
        b, tk, h, w, c = frames.shape
        k = self.context_frames
        flat = frames.reshape(b * tk, h, w, c)
        if frame_ids is None:
            feats = self.encoder(flat)
        else:
            inverse, first = distinct_positions(frame_ids)
            feats = self.encoder(flat[first])[inverse]
        feats = feats.reshape(b * (tk // k), k, *feats.shape[1:])
        emb = self.head(feats)
        return emb.reshape(b, tk // k, emb.shape[-1])

    def train(self, mode: bool = True) -> Embedder:
        """Like ``nn.Module.train``; a frozen ResNet base (``train_base='none'``) stays in eval."""
        super().train(mode)
        if self.cfg.encoder == "resnet50_conv4c" and self.cfg.train_base == "none":
            self.encoder.eval()
        return self


def distinct_positions(frame_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deduplicate the frames of a batch by ``(video, frame_ids [B, N])``.

    Returns ``(inverse [B*N], first [U])``: ``first`` holds the flat position of the first
    occurrence of each of the U distinct frames, and ``x[first][inverse] == x`` for any per-frame
    ``x`` whose equal-id frames are equal.
    """
    b, n = frame_ids.shape
    video = torch.arange(b, device=frame_ids.device).unsqueeze(1)
    key = (frame_ids.long() + video * (int(frame_ids.max()) + 1)).reshape(-1)
    _, inverse = torch.unique(key, return_inverse=True)
    count = int(inverse.max()) + 1
    positions = torch.arange(b * n, device=key.device)
    first = torch.full((count,), b * n, dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, inverse, positions, "amin")
    return inverse, first


def _apply_train_base(encoder: nn.Module, mode: str) -> None:
    bn_types = (nn.BatchNorm2d, nn.BatchNorm3d)
    for module in encoder.modules():
        is_bn = isinstance(module, bn_types)
        for p in module.parameters(recurse=False):
            p.requires_grad_(mode == "all" or (mode == "only_bn" and is_bn))


def build_model(cfg: ModelConfig | dict[str, Any]) -> Embedder:
    """Build the :class:`Embedder` described by ``cfg``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    if cfg.encoder == "light":
        encoder: _Encoder = LightEncoder(cfg.mean, cfg.std, cfg.light_width, cfg.stem)
    elif cfg.encoder == "vggm":
        encoder = VGGMEncoder(cfg.mean, cfg.std)
    else:
        encoder = ResNet50Conv4cEncoder(cfg.mean, cfg.std, weights_path=cfg.backbone_weights)
        _apply_train_base(encoder, cfg.train_base)
    if cfg.head == "paper_conv3d":
        head: nn.Module = PaperConv3dHead(
            encoder.out_channels,
            cfg.embedding_size,
            channels=cfg.head_channels or 512,
            fc_channels=cfg.fc_channels or 512,
            dropout=cfg.dropout,
        )
    else:
        head = LightHead(
            encoder.out_channels,
            cfg.context_frames,
            cfg.embedding_size,
            channels=cfg.head_channels or 128,
            fc_channels=cfg.fc_channels or 256,
            dropout=cfg.dropout,
        )
    return Embedder(encoder, head, cfg)
