"""Normal behaviour per progress: what the motion, direction and appearance detectors compare to.

Per frame the stream already has its embedding and (from :meth:`process_frame`) the resized frame;
:func:`thumbnail` shrinks the latter to 16 x 16 RGB. From these, per frame (:class:`SignalState`
online, :func:`episode_signals` offline, the same definitions):

* ``motion``: RMS pixel change over ``motion_lag`` frames (nothing moves -> 0);
* ``change``: RMS pixel change since the episode's first frame;
* ``velocity``: the embedding's change over ``direction_lag`` frames.

:class:`ProgressProfiles` holds, per progress bin, the normal median motion, the normal median and
spread of ``change``, and the normal unit direction and median length of ``velocity``, fitted on
normal episodes by :func:`fit_profiles` (indexed by the monitor's own aligned progress).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

THUMBNAIL_SIZE = 16
PROFILE_BINS = 20
_MIN_BIN_FRAMES = 5
_PROFILE_KEYS = ("motion", "change_center", "change_scale", "direction", "speed")


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """``[THUMBNAIL_SIZE**2 * 3]`` float32 in [0, 1]: the frame shrunk by area averaging."""
    from tcc_model.preprocess import resize_frames

    small = resize_frames(np.asarray(frame), THUMBNAIL_SIZE)
    return (small.astype(np.float32) / 255.0).reshape(-1)


def thumbnails(frames: np.ndarray, image_size: int) -> np.ndarray:
    """``[N, 768]`` thumbnails of RGB uint8 ``frames`` as the monitor sees them.

    The frames are first resized to the engine's ``image_size`` (what ``process_frame`` does), so
    an offline replay gets the same pixels as the live stream.
    """
    from tcc_model.preprocess import resize_frames

    resized = resize_frames(np.asarray(frames), image_size)
    return np.stack([thumbnail(f) for f in resized]) if len(resized) else np.zeros((0, 768))


def _rms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=-1))


def episode_signals(
    embeddings: np.ndarray, pixels: np.ndarray | None, motion_lag: int, direction_lag: int
) -> dict[str, np.ndarray]:
    """Per-frame ``motion`` / ``change`` (``None`` without pixels) and ``velocity`` of an episode.

    Frame ``t`` is compared with frame ``max(t - lag, 0)``, as :class:`SignalState` does.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    idx = np.arange(len(emb))
    out: dict[str, np.ndarray] = {"velocity": emb - emb[np.maximum(idx - direction_lag, 0)]}
    if pixels is not None and len(pixels):
        px = np.asarray(pixels, dtype=np.float64)
        out["motion"] = _rms(px - px[np.maximum(idx - motion_lag, 0)])
        out["change"] = _rms(px - px[0])
    return out


class SignalState:
    """Online version of :func:`episode_signals`: feed one frame at a time."""

    def __init__(self, motion_lag: int, direction_lag: int) -> None:
        self._pixels: deque[np.ndarray] = deque(maxlen=motion_lag + 1)
        self._embeddings: deque[np.ndarray] = deque(maxlen=direction_lag + 1)
        self._first: np.ndarray | None = None

    def reset(self) -> None:
        self._pixels.clear()
        self._embeddings.clear()
        self._first = None

    def update(self, embedding: np.ndarray, pixels: np.ndarray | None) -> dict[str, object]:
        """``{'velocity': [D] | None, 'motion': float | None, 'change': float | None}``.

        ``velocity`` / ``motion`` are ``None`` until their lag's worth of frames has been seen.
        """
        emb = np.asarray(embedding, dtype=np.float64)
        self._embeddings.append(emb)
        full = len(self._embeddings) == self._embeddings.maxlen
        out: dict[str, object] = {"velocity": emb - self._embeddings[0] if full else None}
        out["motion"] = out["change"] = None
        if pixels is not None:
            px = np.asarray(pixels, dtype=np.float64).reshape(-1)
            if self._first is None:
                self._first = px
            self._pixels.append(px)
            if len(self._pixels) == self._pixels.maxlen:
                out["motion"] = float(_rms(px - self._pixels[0]))
            out["change"] = float(_rms(px - self._first))
        return out


@dataclass
class ProgressProfiles:
    """Normal signal levels per progress bin (``[B]``; ``direction [B, D]``).

    ``motion`` / ``change_*`` are empty when the profile episodes had no pixels.
    """

    motion: np.ndarray
    change_center: np.ndarray
    change_scale: np.ndarray
    direction: np.ndarray
    speed: np.ndarray

    @property
    def bins(self) -> int:
        return int(self.speed.shape[0])

    @property
    def speed_floor(self) -> float:
        """Added to feature speeds before their log ratio: 10% of the median normal speed."""
        return max(0.1 * float(np.median(self.speed)), 1e-9)

    @property
    def motion_floor(self) -> float:
        """Added to image motions before their log ratio: 10% of the median normal motion."""
        return max(0.1 * float(np.median(self.motion)), 1e-9) if self.has_pixels else 1e-9

    @property
    def has_pixels(self) -> bool:
        return self.motion.size > 0

    def bin(self, progress: float) -> int:
        """Bin of a progress value (clipped to [0, 1]; ``nan`` -> the first bin)."""
        if not np.isfinite(progress):
            return 0
        return int(min(max(progress, 0.0), 1.0) * (self.bins - 1e-9))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``references.npz`` (keys ``profile_*``)."""
        return {f"profile_{k}": np.asarray(getattr(self, k)) for k in _PROFILE_KEYS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ProgressProfiles | None:
        """Inverse of :meth:`to_arrays`; ``None`` when the arrays hold no profiles."""
        if not all(f"profile_{k}" in arrays for k in _PROFILE_KEYS):
            return None
        values = {k: np.asarray(arrays[f"profile_{k}"], dtype=np.float64) for k in _PROFILE_KEYS}
        bins = values["speed"].shape[0]
        if values["direction"].ndim != 2 or values["direction"].shape[0] != bins:
            raise ValueError(f"profile_direction has shape {values['direction'].shape}")
        for key in ("motion", "change_center", "change_scale"):
            if values[key].shape not in ((0,), (bins,)):
                raise ValueError(f"profile_{key} has shape {values[key].shape}, not ({bins},)")
        return cls(**values)


def _fill_bins(values: list[np.ndarray], reducer, fallback: float) -> np.ndarray:  # noqa: ANN001
    """Reduce each bin's samples; bins with too few samples take their nearest filled bin."""
    out = np.full(len(values), np.nan)
    for b, v in enumerate(values):
        if len(v) >= _MIN_BIN_FRAMES:
            out[b] = reducer(np.asarray(v))
    filled = np.flatnonzero(np.isfinite(out))
    if filled.size == 0:
        return np.full(len(values), fallback)
    nearest = filled[np.abs(np.arange(len(values))[:, None] - filled[None, :]).argmin(axis=1)]
    return out[nearest]


def fit_profiles(
    progress: Sequence[np.ndarray],
    signals: Sequence[Mapping[str, np.ndarray]],
    bins: int = PROFILE_BINS,
) -> ProgressProfiles:
    """Per-bin normal levels from episodes' progress ``[N]`` and :func:`episode_signals`.

    Medians for motion, change and speed; the change spread is 1.4826 x MAD, floored at 10% of
    the overall median change (a bin where every normal run looks alike must not turn pixel noise
    into alarms). Direction: the normalised mean of the unit velocities in the bin.
    """
    prog = np.concatenate([np.asarray(p, dtype=np.float64) for p in progress])
    which = np.minimum((np.clip(np.nan_to_num(prog), 0, 1) * bins).astype(int), bins - 1)
    groups = [np.flatnonzero(which == b) for b in range(bins)]
    velocity = np.concatenate([s["velocity"] for s in signals])
    speed = np.linalg.norm(velocity, axis=1)
    unit = velocity / np.maximum(speed, 1e-12)[:, None]
    speed_bins = _fill_bins([speed[g] for g in groups], np.median, float(np.median(speed)))
    direction = np.zeros((bins, velocity.shape[1]))
    for b, g in enumerate(groups):
        if len(g):
            direction[b] = unit[g].mean(axis=0)
    norms = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = np.where(norms > 0, direction / np.maximum(norms, 1e-12), 0.0)
    empty = np.array([len(g) == 0 for g in groups])
    if empty.any() and not empty.all():
        full = np.flatnonzero(~empty)
        direction[empty] = direction[full[np.abs(np.flatnonzero(empty)[:, None] - full).argmin(1)]]
    if all("motion" in s for s in signals):
        motion = np.concatenate([s["motion"] for s in signals])
        change = np.concatenate([s["change"] for s in signals])
        motion_bins = _fill_bins([motion[g] for g in groups], np.median, float(np.median(motion)))
        center = _fill_bins([change[g] for g in groups], np.median, float(np.median(change)))
        floor = max(0.1 * float(np.median(change)), 1e-4)

        def spread(v: np.ndarray) -> float:
            return float(1.4826 * np.median(np.abs(v - np.median(v))))

        scale = np.maximum(_fill_bins([change[g] for g in groups], spread, floor), floor)
    else:
        motion_bins = center = scale = np.zeros(0)
    return ProgressProfiles(motion_bins, center, scale, direction, speed_bins)
