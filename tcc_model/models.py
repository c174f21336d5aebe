"""Frame encoders, context heads and the :class:`Embedder` that combines them.

Conventions (see ``docs/ARCHITECTURE.md``):

* ``encoder(frames [N, H, W, 3] RGB 0..255, uint8 or float) -> features [N, C, h, w]``; the
  encoder normalises its input with :class:`tcc_model.preprocess.Normalize` first.
* ``head(context_features [N, k, C, h, w]) -> embeddings [N, D]`` (k context frames, oldest first).
* ``Embedder.forward(frames [B, T*k, H, W, 3]) -> [B, T, D]``.

Every module is ONNX-exportable: no data-dependent Python control flow in ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tcc_model.config import from_mapping, to_dict
from tcc_model.errors import ConfigError
from tcc_model.preprocess import Normalize, PreprocessConfig

ENCODERS = ("resnet50_conv4c", "vggm", "light")
HEADS = ("paper_conv3d", "light")
TRAIN_BASE_MODES = ("only_bn", "all", "none")
STEMS = ("conv", "patchify")


@dataclass
class ModelConfig:
    """Architecture of an :class:`Embedder`; stored in checkpoints and bundles."""

    # per-frame encoder: the paper's ResNet-50 up to conv4c, its VGG-M, or the light CPU net
    encoder: Literal["resnet50_conv4c", "vggm", "light"] = "light"
    # context head: the paper's 3-D conv embedder or the light one
    head: Literal["paper_conv3d", "light"] = "light"
    # side of the square network input in pixels (frames are resized to it)
    image_size: int = 112
    # frames per embedding (the main frame and k-1 earlier ones, oldest first)
    context_frames: int = 2
    # frames between two context frames
    context_stride: int = 15
    # dimension D of the embedding
    embedding_size: int = 128
    # per-channel RGB mean and std of the input normalisation (0..1 units)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # which ResNet parameters train: only BatchNorm, all, or none (frozen base)
    train_base: Literal["only_bn", "all", "none"] = "only_bn"
    # local torchvision resnet50 ImageNet state dict (resnet50_conv4c only); nothing downloads
    backbone_weights: str | None = None
    # dropout before the head's fully connected layers
    dropout: float = 0.1
    # head conv channels; None: 512 for 'paper_conv3d', 128 for 'light'
    head_channels: int | None = None
    # head FC width; None: 512 for 'paper_conv3d', 256 for 'light'
    fc_channels: int | None = None
    # width of the light encoder (its channels: w/2, w, 2w, 2w, 4w)
    light_width: int = 32
    # light encoder's first stages: 'conv' (two 3x3 stride-2 convs) or 'patchify' (one 4x4
    # stride-4 conv, ConvNeXt's stem: 1.85x faster training steps in benchmarks/bench_train.py)
    stem: Literal["conv", "patchify"] = "conv"
    # free-form notes carried along (not used by the code)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        checks = [
            ("context_frames", self.context_frames >= 1, ">= 1"),
            ("context_stride", self.context_stride >= 0, ">= 0"),
            ("image_size", self.image_size >= 32, ">= 32"),
            ("embedding_size", self.embedding_size >= 1, ">= 1"),
            ("light_width", self.light_width >= 2, ">= 2"),
            ("std", len(self.std) == 3 and min(self.std) > 0, "3 values > 0"),
            ("mean", len(self.mean) == 3, "3 values"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("encoder", self.encoder in ENCODERS, f"one of {ENCODERS}"),
            ("head", self.head in HEADS, f"one of {HEADS}"),
            ("train_base", self.train_base in TRAIN_BASE_MODES, f"one of {TRAIN_BASE_MODES}"),
            ("stem", self.stem in STEMS, f"one of {STEMS}"),
            (
                "stem",
                self.stem == "conv" or self.encoder == "light",
                "'conv' (only 'light' has a stem option)",
            ),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"model.{key}={getattr(self, key)!r}: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (YAML/JSON/checkpoint friendly)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`: keys and value types checked (ConfigError naming them)."""
        return from_mapping(cls, d, "model")

    def preprocess_config(self) -> PreprocessConfig:
        """The :class:`PreprocessConfig` matching this model."""
        return PreprocessConfig(
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            context_frames=self.context_frames,
            context_stride=self.context_stride,
        )


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _Encoder(nn.Module):
    """``Normalize`` then a conv ``trunk`` (subclasses set ``trunk``, ``out_channels``)."""

    out_channels: int
    stride: int

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(frames))


class LightEncoder(_Encoder):
    """Small strided conv net for real-time CPU inference (~39 MFLOPs per frame at 112², width 32).

    ``stem='conv'``: four stride-2 3×3 conv/BN/ReLU stages plus one stride-1 stage at ``S/8``.
    ``stem='patchify'``: the first two stages (``S/2``, ``S/4``) become one 4×4 stride-4 conv
    (ConvNeXt's stem): on a CPU the 3- and 16-channel convolutions and the BatchNorm/ReLU passes
    at ``S/2`` run far below the GEMM peak, and the patchify stem is one dense GEMM at ``S/4``.
    Both give ``[N, S, S, 3] -> [N, 4*width, S/16, S/16]`` (``[N, 128, 7, 7]`` at 112²).
    """

    def __init__(self, mean, std, width: int = 32, stem: str = "conv") -> None:
        super().__init__(mean, std)
        w = width
        if stem == "patchify":
            first = [
                nn.Conv2d(3, w, 4, stride=4, bias=False),  # S/4
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
        else:
            first = [
                *_conv_bn_relu(3, w // 2, 3, stride=2),  # S/2
                *_conv_bn_relu(w // 2, w, 3, stride=2),  # S/4
            ]
        self.trunk = nn.Sequential(
            *first,
            *_conv_bn_relu(w, 2 * w, 3, stride=2),  # S/8
            *_conv_bn_relu(2 * w, 2 * w, 3),
            *_conv_bn_relu(2 * w, 4 * w, 3, stride=2),  # S/16
        )
        self.out_channels = 4 * w
        self.stride = 16


class VGGMEncoder(_Encoder):
    """The paper's VGG-M-like network trained from scratch (``vggm_net`` up to ``conv4``).

    ``[N, 224, 224, 3] -> [N, 512, 14, 14]``.
    """

    def __init__(self, mean, std) -> None:
        super().__init__(mean, std)

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return _conv_bn_relu(c_in, c_out, 3) + _conv_bn_relu(c_out, c_out, 3)

        self.trunk = nn.Sequential(
            nn.ZeroPad2d(3),
            nn.Conv2d(3, 64, 7, stride=2, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ZeroPad2d(1),
            nn.MaxPool2d(3, stride=2),
            *block(64, 128),
            nn.MaxPool2d(2, stride=2),
            *block(128, 256),
            nn.MaxPool2d(2, stride=2),
            *block(256, 512),
        )
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.out_channels = 512
        self.stride = 16


class ResNet50Conv4cEncoder(_Encoder):
    """torchvision ResNet-50 truncated after ``layer3[:3]`` (the paper's ``conv4c``).

    ``[N, 224, 224, 3] -> [N, 1024, 14, 14]``. The reference uses Keras ResNet50-V2; this is
    torchvision's V1.5, the ImageNet weights of which are loaded from a local file only.
    """

    def __init__(self, mean, std, weights_path: str | None = None) -> None:
        super().__init__(mean, std)
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3[:3]
        )
        self.out_channels = 1024
        self.stride = 16
        if weights_path:
            self.load_imagenet_weights(weights_path)

    def load_imagenet_weights(self, path: str | Path) -> None:
        """Load a torchvision ``resnet50`` ImageNet state dict from a local file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone_weights file {str(path)!r} does not exist; pass the path of a local "
                "torchvision resnet50 state dict (e.g. resnet50-0676ba61.pth) with "
                "--backbone-weights, or use the 'vggm'/'light' encoder (nothing is downloaded)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ValueError(
                f"backbone_weights {str(path)!r} is not a torch state dict: {exc}"
            ) from exc
        if (
            isinstance(state, dict)
            and "state_dict" in state
            and isinstance(state["state_dict"], dict)
        ):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"backbone_weights {str(path)!r} does not hold a state dict")
        names = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            prefix, _, rest = key.partition(".")
            if prefix not in names:
                continue
            if prefix == "layer3" and int(rest.split(".")[0]) >= 3:
                continue
            mapped[f"{names[prefix]}.{rest}"] = value
        expected = self.trunk.state_dict()
        missing = sorted(set(expected) - set(mapped))
        bad_shape = sorted(
            k for k in set(expected) & set(mapped) if expected[k].shape != mapped[k].shape
        )
        if missing or bad_shape:
            raise ValueError(
                f"backbone_weights {str(path)!r} does not match torchvision resnet50: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"shape mismatch {bad_shape[:5]}"
            )
        self.trunk.load_state_dict(mapped)


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
