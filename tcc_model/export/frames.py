"""Frames for the parity check and int8 calibration: synthetic ones, or a dataset's.

No torch import here (the engine benchmark uses :func:`synthetic_frames` too).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tcc_model.export.options import ExportError
from tcc_model.preprocess import resize_frames


def synthetic_frames(num_frames: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth RGB uint8 frames ``[num_frames, size, size, 3]`` (a drifting pattern).

    Used for the parity check when no dataset is given: smooth content exercises the convolutions
    like natural images do, unlike white noise.
    """
    rng = np.random.default_rng(seed)
    coarse = max(size // 8, 2)
    base = rng.integers(0, 256, (coarse, coarse, 3), dtype=np.uint8)
    drift = rng.integers(-40, 41, (num_frames, 1, 1, 3))
    steps = np.arange(num_frames)[:, None, None, None] / max(num_frames - 1, 1)
    coarse_seq = np.clip(base[None].astype(np.int64) + (drift * steps).astype(np.int64), 0, 255)
    frames = resize_frames(coarse_seq.astype(np.uint8), size)
    noise = rng.integers(-8, 9, frames.shape)
    return np.clip(frames.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _dataset_root(name: str) -> Path:
    """Resolve ``--dataset`` through ``tcc_model.data.registry`` (or a plain directory path)."""
    try:
        from tcc_model.data import registry
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "resolve_dataset"):
        return Path(registry.resolve_dataset(name))
    path = Path(name.removeprefix("folder:"))
    if path.is_dir():
        return path
    raise ExportError(
        f"--dataset {name!r}: not a directory and the dataset registry is not "
        "available; pass a dataset directory (folder:PATH)"
    )


def load_dataset_frames(
    name: str, size: int, num_check_frames: int, num_calib_frames: int, max_val_videos: int = 8
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str] | None]:
    """Check frames (one val episode), calibration frames (spread over train), val videos and
    the dataset's phase names.

    All frames are resized to ``size`` with :func:`resize_frames`, exactly as at inference.
    """
    from tcc_model.data.format import list_splits, load_split, read_manifest

    root = _dataset_root(name)
    try:
        phase_names = read_manifest(root).get("phase_names")
    except ValueError:
        phase_names = None
    splits = list_splits(root)
    if not splits:
        raise ExportError(f"--dataset {name}: {root} has no splits (train/, val/, ...)")
    val_split = "val" if "val" in splits else ("test" if "test" in splits else splits[0])
    calib_split = "train" if "train" in splits else val_split
    val_episodes = load_split(root, val_split)[:max_val_videos]
    calib_episodes = load_split(root, calib_split)
    if not val_episodes or not calib_episodes:
        raise ExportError(f"--dataset {name}: split {val_split} or {calib_split} has no videos")
    val_videos = [resize_frames(ep.load_frames(), size) for ep in val_episodes]
    check = val_videos[0][:num_check_frames]
    per_episode = max(1, math.ceil(num_calib_frames / len(calib_episodes)))
    calib = []
    for ep in calib_episodes[:num_calib_frames]:
        frames = ep.load_frames()
        picks = np.linspace(0, len(frames) - 1, min(per_episode, len(frames))).round().astype(int)
        calib.append(resize_frames(frames[picks], size))
    return check, np.concatenate(calib)[:num_calib_frames], val_videos, phase_names
