"""Camera augmentation: one set of parameters per clip, each operation does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tcc_model.data.augment import (
    AugmentConfig,
    apply_params,
    augment_camera,
    resolve_augment,
    sample_params,
)
from tcc_model.errors import ConfigError

IDENTITY = AugmentConfig(
    gain=(1.0, 1.0),
    white_balance=0.0,
    hue_degrees=0.0,
    saturation=(1.0, 1.0),
    contrast=(1.0, 1.0),
    gamma=(1.0, 1.0),
    noise_std=(0.0, 0.0),
    blur_probability=0.0,
    shift=0.0,
    scale=(1.0, 1.0),
    rotation_degrees=0.0,
)


def _scene(frames: int = 4, size: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, (size, size, 3)).astype(np.uint8)
    image[8:16, 8:16] = [250, 40, 40]
    return torch.from_numpy(np.repeat(image[None], frames, axis=0))


def _params(**changes) -> dict:
    params = sample_params(IDENTITY, np.random.default_rng(0))
    params.update(changes)
    return params


def test_identity_config_leaves_frames_unchanged() -> None:
    frames = _scene()
    out = augment_camera(frames, np.random.default_rng(1), IDENTITY)
    assert out.dtype == torch.float32
    assert torch.allclose(out, frames.float(), atol=1e-3)


def test_every_frame_of_a_clip_gets_the_same_change() -> None:
    frames = _scene(6)
    quiet = AugmentConfig(noise_std=(0.0, 0.0), blur_probability=1.0)
    for seed in range(5):
        out = augment_camera(frames, np.random.default_rng(seed), quiet)
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-4)
        assert not torch.allclose(out, frames.float(), atol=1.0)
    a = augment_camera(frames, np.random.default_rng(7))
    assert torch.equal(a, augment_camera(frames, np.random.default_rng(7)))  # deterministic


def test_each_operation_moves_the_image_the_right_way() -> None:
    x = _scene(1).float()
    mean = float(x.mean())
    assert float(apply_params(x, _params(gain=1.3)).mean()) > mean + 10
    assert float(apply_params(x, _params(gamma=1.3)).mean()) < mean - 5
    red = apply_params(x, _params(white_balance=[1.2, 1.0, 0.8]))
    assert float(red[..., 0].mean()) > float(x[..., 0].mean()) + 5
    assert float(red[..., 2].mean()) < float(x[..., 2].mean()) - 5
    grey = apply_params(x, _params(saturation=0.0))
    assert float((grey[..., 0] - grey[..., 1]).abs().max()) < 1.0
    blurred = apply_params(x, _params(blur=1.0))
    assert float(blurred.diff(dim=2).abs().mean()) < 0.7 * float(x.diff(dim=2).abs().mean())
    moved = apply_params(x, _params(shift=[0.25, 0.0]))  # a quarter of the width to the right
    assert float(moved[0, 12, 12 + 8, 0]) == pytest.approx(250.0, abs=2.0)
    noisy = apply_params(x, _params(noise_std=5.0))
    assert 3.0 < float((noisy - x).std()) < 7.0


def test_presets_and_config_errors() -> None:
    assert resolve_augment(False) is None and resolve_augment("none") is None
    assert resolve_augment(True) == "reference"
    assert resolve_augment("camera") == AugmentConfig()
    assert resolve_augment({"gamma": [0.9, 1.1]}).gamma == (0.9, 1.1)
    with pytest.raises(ConfigError, match="augment: unknown key 'gama'"):
        resolve_augment({"gama": [0.9, 1.1]})
    with pytest.raises(ConfigError, match=r"augment\.contrast: got .*low <= high"):
        AugmentConfig.from_dict({"contrast": [1.2, 0.8]})
    with pytest.raises(ConfigError, match="expected true/false, one of none, reference, camera"):
        resolve_augment("strong")
