"""Architecture settings of an :class:`~tcc_model.models.Embedder` (:class:`ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

from tcc_model.config import from_mapping, to_dict
from tcc_model.errors import ConfigError
from tcc_model.preprocess import PreprocessConfig

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
        # 3 values each: checked below, with the other fields
        self.mean = cast("tuple[float, float, float]", tuple(float(m) for m in self.mean))
        self.std = cast("tuple[float, float, float]", tuple(float(s) for s in self.std))
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
