"""Torch datasets for training: clip sampling with context frames, TCN positives, augmentation.

Follows the reference input pipeline: ``offset_uniform`` picks ``T`` distinct sorted main frames
from ``1..L-1`` (``0..T-1`` clamped when the video is too short), ``stride`` takes every
``stride``-th frame from a random offset. Each main frame ``t`` is expanded to its causal context
``tcc_model.preprocess.context_indices(t, k, stride)`` (oldest first). With ``tcn_positives`` every
main frame ``s`` gets a positive ``p ~ U{s-5..s-1}`` and the steps are interleaved
``[p0, s0, p1, s1, ...]``. Augmentation uses one set of random parameters per video: the
reference's (horizontal flip p=0.5, brightness delta up to 32/255, contrast factor in [0.5, 1.5],
clipped to 0..255), or the camera augmentation of :mod:`tcc_model.data.augment` (exposure,
white balance, hue, saturation, contrast, gamma, noise, blur, a small warp).

Randomness comes from ``numpy.random.default_rng((seed, epoch, index))``, so an item depends only on
those three numbers: DataLoader workers and resumed runs reproduce the same clips. Call
:meth:`VideoClipDataset.set_epoch` before each epoch (workers must be re-created per epoch, the
DataLoader default, to see it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tcc_model.data.augment import AugmentConfig, augment_camera, resolve_augment
from tcc_model.data.format import DatasetError, Episode
from tcc_model.preprocess import context_indices, resize_frames

SAMPLING_STRATEGIES = ("offset_uniform", "stride")
BRIGHTNESS_MAX_DELTA = 32.0  # in 0..255 units (the reference's 32/255 on 0..1 images)
CONTRAST_RANGE = (0.5, 1.5)


class FrameCache:
    """Decodes each video once and keeps its frames (RGB uint8) in memory.

    ``image_size`` resizes frames on load (``resize_frames``); ``None`` keeps them as stored.
    In DataLoader workers each process holds its own copy; call :meth:`preload` before creating
    the loader to decode once in the parent and share the pages copy-on-write.
    """

    def __init__(self, image_size: int | None = None) -> None:
        self.image_size = image_size
        self._frames: dict[Path, np.ndarray] = {}

    def get(self, episode: Episode) -> np.ndarray:
        """Frames ``[N, H, W, 3]`` of ``episode`` (decoded on first use)."""
        key = Path(episode.video_path)
        frames = self._frames.get(key)
        if frames is None:
            frames = episode.load_frames()
            if len(frames) != episode.num_frames:
                raise DatasetError(
                    f"{episode.video_path}: decodes to {len(frames)} frames but its labels say "
                    f"{episode.num_frames}; run `python -m tcc_model.data.check` on the dataset"
                )
            if self.image_size is not None:
                frames = resize_frames(frames, self.image_size)
            frames.setflags(write=False)
            self._frames[key] = frames
        return frames

    def preload(self, episodes: list[Episode]) -> None:
        """Decode all ``episodes`` now."""
        for episode in episodes:
            self.get(episode)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self._frames.values())


@dataclass(frozen=True)
class ClipSampler:
    """Chooses the main frame indices of one training clip (the reference's samplers)."""

    num_frames: int = 20
    sampling: str = "offset_uniform"
    stride: int = 16
    tcn_positives: bool = False
    positive_window: int = 5

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"sampling must be one of {SAMPLING_STRATEGIES}, got {self.sampling!r}"
            )
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1 or self.positive_window < 1:
            raise ValueError("stride and positive_window must be >= 1")

    def sample(self, seq_len: int, rng: np.random.Generator) -> np.ndarray:
        """Main frame indices (int64, in ``0..seq_len-1``): ``[T]``, ``[2T]`` with TCN positives."""
        t = self.num_frames
        if self.sampling == "offset_uniform":
            if t <= seq_len - 1:
                steps = np.sort(rng.choice(np.arange(1, seq_len), size=t, replace=False))
            else:
                steps = np.arange(t)
        else:
            offset = rng.integers(0, max(1, seq_len - self.stride * t))
            steps = offset + self.stride * np.arange(t)
        steps = np.minimum(steps.astype(np.int64), seq_len - 1)
        if self.tcn_positives:
            positives = rng.integers(steps - self.positive_window, steps)
            steps = np.stack([positives, steps], axis=1).reshape(-1)
        return np.clip(steps, 0, seq_len - 1)


def augment_clip(frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Video-consistent flip/brightness/contrast of ``[N, H, W, 3]`` frames → float32 0..255.

    Brightness adds ``delta``; contrast scales around each frame's per-channel mean (as
    ``adjust_contrast``): ``(x + delta - m) * f + m`` with ``m = mean(x) + delta``.
    """
    if rng.random() < 0.5:
        frames = frames.flip(2)
    delta = float(rng.uniform(-BRIGHTNESS_MAX_DELTA, BRIGHTNESS_MAX_DELTA))
    factor = float(rng.uniform(*CONTRAST_RANGE))
    x = frames.to(torch.float32)
    n = x.shape[0]
    mean = x.view(n, -1, 3).mean(dim=1).view(n, 1, 1, 3) + delta
    # (x + delta - mean) * factor + mean, fused into one multiply-add
    x.mul_(factor).add_(mean * (1.0 - factor) + delta * factor)
    return x.clamp_(0.0, 255.0)


class VideoClipDataset(Dataset):
    """One item per video: a sampled clip with context frames, its steps and phase labels.

    Item keys: ``frames`` ``[S*k, H, W, 3]`` (uint8, or float32 0..255 when augmenting; the k
    context frames of each step consecutive, oldest first), ``steps`` long ``[S]`` (main frame
    indices), ``seq_len`` long scalar, ``phase_ids`` long ``[S]`` (``-1`` when unlabelled),
    ``video_index`` long scalar; ``S = T``, or ``2T`` interleaved ``[p0, s0, ...]`` with
    ``tcn_positives``. ``augment``: ``True``/``"reference"``, ``"camera"``, an
    :class:`~tcc_model.data.augment.AugmentConfig` (or its mapping), ``False``/``"none"``.
    """

    def __init__(
        self,
        episodes: list[Episode],
        num_frames: int = 20,
        context_frames: int = 2,
        context_stride: int = 15,
        sampling: str = "offset_uniform",
        augment: bool | str | AugmentConfig | dict = True,
        tcn_positives: bool = False,
        seed: int = 0,
        sample_stride: int = 16,
        image_size: int | None = None,
        cache: FrameCache | None = None,
        min_videos: int = 2,
        max_speedup: float = 1.0,
    ) -> None:
        if len(episodes) < min_videos:
            raise DatasetError(
                f"need at least {min_videos} videos for training, got {len(episodes)}; "
                "add videos to the split (TCC aligns pairs of videos)"
            )
        if context_frames < 1 or context_stride < 0:
            raise ValueError(
                f"context_frames must be >= 1 and context_stride >= 0, got "
                f"{context_frames}, {context_stride}"
            )
        self.episodes = list(episodes)
        self.sampler = ClipSampler(num_frames, sampling, sample_stride, tcn_positives)
        self.context_frames = context_frames
        self.context_stride = context_stride
        self.augment = resolve_augment(augment)
        if not 1.0 <= max_speedup <= 4.0:
            raise ValueError(f"max_speedup must be in [1, 4], got {max_speedup}")
        self.max_speedup = float(max_speedup)
        self.seed = seed
        self.epoch = 0
        self.cache = cache if cache is not None else FrameCache(image_size)
        self._phase_ids = [e.labels.phase_id_array() for e in self.episodes]

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (sampling and augmentation)."""
        self.epoch = int(epoch)

    def preload(self) -> None:
        """Decode every video into the cache now."""
        self.cache.preload(self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self.episodes):
            raise IndexError(f"index {index} out of range for {len(self.episodes)} videos")
        episode = self.episodes[index]
        frames = self.cache.get(episode)
        rng = self.rng_for(index)
        timeline = self._timeline(len(frames), rng)
        seq_len = len(timeline)
        steps = self.sampler.sample(seq_len, rng)
        gather = context_indices(steps, self.context_frames, self.context_stride).reshape(-1)
        gather = timeline[gather]
        if self.augment is None or self.augment == "reference":
            clip = torch.from_numpy(np.ascontiguousarray(frames[gather]))
            if self.augment == "reference":
                clip = augment_clip(clip, rng)
        else:  # augment each distinct frame once (context frames and positives repeat frames)
            distinct, inverse = np.unique(gather, return_inverse=True)
            unique_frames = torch.from_numpy(np.ascontiguousarray(frames[distinct]))
            clip = augment_camera(unique_frames, rng, self.augment)[torch.from_numpy(inverse)]
        return {
            "frames": clip,
            "steps": torch.from_numpy(steps),
            "seq_len": torch.tensor(seq_len, dtype=torch.long),
            "phase_ids": torch.from_numpy(self._phase_ids[index][timeline[steps]]),
            "video_index": torch.tensor(index, dtype=torch.long),
        }

    def _timeline(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Video frame of each step of the clip's time: every frame, or a faster playback.

        With ``max_speedup`` > 1 the clip plays ``s`` ~ U[1, max_speedup] times faster (frame
        ``floor(k s)`` at step ``k``), so a robot that moves faster than in the demonstrations
        looks like something the model saw; steps, context stride and TCN windows are in that
        time. ``rng`` is not drawn from when off (the sampling stays as without the option).
        """
        if self.max_speedup <= 1.0:
            return np.arange(num_frames)
        speed = rng.uniform(1.0, self.max_speedup)
        steps = max(int(np.ceil(num_frames / speed)), min(num_frames, self.sampler.num_frames))
        return np.minimum(np.floor(np.arange(steps) * speed).astype(np.int64), num_frames - 1)


def worker_threads_init(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` keeping each worker single-threaded (OpenCV and torch)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
