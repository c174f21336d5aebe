"""Clip-consistent augmentation that imitates how a real camera's picture varies.

One set of parameters is drawn per clip and applied to every frame of it (as the reference's
augmentation), so the model sees a whole episode under one exposure, white balance, focus and
camera pose, the way a fixed robot-cell camera films it, and never learns to read time from
appearance that changes frame to frame. Only the sensor noise is drawn per pixel and frame.

Operations (each can be switched off by a zero range or probability in :class:`AugmentConfig`):

* geometry: one small affine warp per clip (shift, scale, rotation): a camera bumped slightly;
  optional horizontal flip (off by default: a fixed cell never appears mirrored);
* defocus: Gaussian blur with probability ``blur_probability``;
* photometric: exposure gain, per-channel white-balance gains, hue rotation, saturation,
  contrast around the frame mean, gamma;
* sensor noise: Gaussian, standard deviation drawn per clip.

Presets (:func:`resolve_augment`): ``"reference"`` (or ``True``): the reference's flip,
brightness and contrast (:func:`tcc_model.data.sampling.augment_clip`); ``"camera"``: the
defaults below; ``"none"`` (or ``False``): nothing. A mapping gives an ``AugmentConfig``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tcc_model.errors import ConfigError, safe_text

AUGMENT_PRESETS = ("none", "reference", "camera")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the clip-level camera augmentation (all drawn uniformly, once per clip)."""

    gain: tuple[float, float] = (0.65, 1.5)  # exposure, multiplicative (log-uniform)
    white_balance: float = 0.15  # per-channel gains in [1 - wb, 1 + wb]
    hue_degrees: float = 15.0  # rotation of the chroma plane in [-h, h]
    saturation: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    noise_std: tuple[float, float] = (0.0, 6.0)  # in 0..255 units
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.4, 1.2)  # pixels
    shift: float = 0.04  # fraction of the image side, in [-s, s] per axis
    scale: tuple[float, float] = (0.95, 1.07)
    rotation_degrees: float = 3.0
    flip_probability: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "augment") -> AugmentConfig:
        """Config from a (partial) mapping; unknown keys and bad values raise ConfigError."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {safe_text(key)!r}; expected one of {', '.join(known)}"
                )
            default = getattr(cls(), key)
            try:
                if isinstance(default, tuple):
                    low, high = (float(v) for v in value)
                    if not low <= high:
                        raise ValueError
                    values[key] = (low, high)
                else:
                    values[key] = float(value)
                    if values[key] < 0:
                        raise ValueError
            except (TypeError, ValueError):
                expected = "[low, high] with low <= high" if isinstance(default, tuple) else ">= 0"
                raise ConfigError(
                    f"{source}.{key}: got {safe_text(value)!r}; expected {expected}"
                ) from None
        return cls(**values)


def resolve_augment(value: bool | str | Mapping[str, Any] | AugmentConfig | None) -> Any:
    """``None`` (no augmentation), ``"reference"`` or an :class:`AugmentConfig` for ``value``."""
    if value is None or value is False or value == "none":
        return None
    if value is True or value == "reference":
        return "reference"
    if value == "camera":
        return AugmentConfig()
    if isinstance(value, AugmentConfig):
        return value
    if isinstance(value, Mapping):
        return AugmentConfig.from_dict(value)
    raise ConfigError(
        f"augment: got {safe_text(value)!r}; expected true/false, one of "
        f"{', '.join(AUGMENT_PRESETS)} or a mapping of AugmentConfig ranges"
    )


def _uniform(rng: np.random.Generator, span: tuple[float, float]) -> float:
    return float(rng.uniform(span[0], span[1]))


def sample_params(cfg: AugmentConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The parameters of one clip (a fixed number of draws whatever ``cfg`` holds)."""
    draws = rng.random(2)
    sigma = _uniform(rng, cfg.blur_sigma)
    return {
        "flip": bool(draws[0] < cfg.flip_probability),
        "blur": sigma if draws[1] < cfg.blur_probability else 0.0,
        "gain": float(math.exp(rng.uniform(math.log(cfg.gain[0]), math.log(cfg.gain[1])))),
        "white_balance": [float(v) for v in 1 + rng.uniform(-1, 1, 3) * cfg.white_balance],
        "hue": float(math.radians(rng.uniform(-1, 1) * cfg.hue_degrees)),
        "saturation": _uniform(rng, cfg.saturation),
        "contrast": _uniform(rng, cfg.contrast),
        "gamma": _uniform(rng, cfg.gamma),
        "noise_std": _uniform(rng, cfg.noise_std),
        "shift": [float(v) for v in rng.uniform(-1, 1, 2) * cfg.shift],
        "scale": _uniform(rng, cfg.scale),
        "rotation": float(math.radians(rng.uniform(-1, 1) * cfg.rotation_degrees)),
        "noise_seed": int(rng.integers(2**31)),
    }


def _warp(x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """One affine warp of every frame ``[N, 3, H, W]`` (border pixels repeated)."""
    if p["shift"] == [0.0, 0.0] and p["scale"] == 1.0 and p["rotation"] == 0.0:
        return x
    c, s = math.cos(p["rotation"]) / p["scale"], math.sin(p["rotation"]) / p["scale"]
    # theta maps output to input coordinates (-1..1): content moves by +shift of the side
    dx, dy = -2 * p["shift"][0], -2 * p["shift"][1]
    theta = torch.tensor([[[c, -s, dx], [s, c, dy]]], dtype=x.dtype)
    n, channels, h, w = x.shape
    # one grid for the whole clip: frames and channels go through grid_sample as channels
    grid = F.affine_grid(theta, [1, n * channels, h, w], align_corners=False)
    flat = x.reshape(1, n * channels, h, w)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(n, channels, h, w)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, 3, H, W]``."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=3)
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.transpose(2, 3), groups=3
    )


def _colour_matrix(p: dict[str, Any]) -> torch.Tensor:
    """3x3 RGB matrix: white balance, then hue rotation and saturation in YIQ."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        dtype=torch.float32,
    )
    c, s, sat = math.cos(p["hue"]), math.sin(p["hue"]), p["saturation"]
    chroma = torch.tensor([[1.0, 0.0, 0.0], [0.0, c * sat, -s * sat], [0.0, s * sat, c * sat]])
    balance = torch.diag(torch.tensor(p["white_balance"], dtype=torch.float32))
    return torch.linalg.inv(to_yiq) @ chroma @ to_yiq @ balance


def _tone(frames: torch.Tensor, gamma: float) -> torch.Tensor:
    """``[N, H, W, 3]`` frames → gamma-curved float32 ``[N, 3, H, W]`` in 0..1 (a LUT for uint8)."""
    if frames.dtype == torch.uint8:
        lut = (torch.arange(256, dtype=torch.float32) / 255.0).pow_(gamma)
        x = lut[frames.to(torch.long)]
    else:
        x = (frames.to(torch.float32) / 255.0).clamp_(0.0, 1.0).pow_(gamma)
    return x.permute(0, 3, 1, 2)


def apply_params(frames: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """Apply one clip's parameters to ``[N, H, W, 3]`` frames (uint8 or 0..255 float) → float32.

    Order: tone curve (gamma), flip and warp, blur, then one affine colour map per frame (white
    balance, hue, saturation, exposure gain and contrast around the frame's mean grey folded into
    a 3x3 matrix and an offset), sensor noise, clipping to 0..255.
    """
    x = _tone(frames, p["gamma"])  # [N, 3, H, W], 0..1
    if p["flip"]:
        x = x.flip(3)
    x = _warp(x, p)
    if p["blur"] > 0:
        x = _blur(x, p["blur"])
    matrix = _colour_matrix(p) * p["gain"]
    contrast = p["contrast"]
    # contrast around the mean grey of the colour-mapped frame, which is linear in the input:
    # y = c * M x + (1 - c) * mean(M x), mean(M x) = mean over channels of M @ mean_rgb(x)
    grey = (x.mean(dim=(2, 3)) @ matrix.T).mean(dim=1)  # [N]
    offset = ((1.0 - contrast) * 255.0) * grey
    y = torch.einsum("ij,njhw->nihw", matrix * (contrast * 255.0), x)
    y += offset.view(-1, 1, 1, 1)
    if p["noise_std"] > 0:
        generator = torch.Generator().manual_seed(p["noise_seed"])
        y += torch.randn(y.shape, generator=generator).mul_(p["noise_std"])
    return y.clamp_(0.0, 255.0).permute(0, 2, 3, 1).contiguous()


def augment_camera(
    frames: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> torch.Tensor:
    """Clip-consistent camera augmentation of ``[N, H, W, 3]`` frames → float32 0..255."""
    return apply_params(frames, sample_params(cfg or AugmentConfig(), rng))
