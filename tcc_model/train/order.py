"""Deterministic, resumable batch order: batch ``s`` of rank ``r`` is a pure function of
``(seed, s, r)``.

Videos come from per-epoch permutations of the training set, clips from ``VideoClipDataset``
streams ``(seed, epoch, video)``, and the torch RNG (dropout, loss sampling) is re-seeded from
:func:`step_seed` at every step, so ``--resume`` continues a killed run exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the torch RNG for one optimisation step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank, 0x7CC]).generate_state(1)[0])


def batch_positions(
    step: int, batch_size: int, num_videos: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """``(epoch, video)`` pairs of the batch of ``rank`` at ``step``.

    The global stream is a concatenation of per-epoch permutations of the videos; each step
    takes the next ``world_size * batch_size`` entries and rank ``r`` the ``r``-th block (like a
    ``DistributedSampler`` that never drops a video), so any step can be recomputed in O(1).
    """
    start = (step * world_size + rank) * batch_size
    positions = np.arange(start, start + batch_size)
    epochs, offsets = positions // num_videos, positions % num_videos
    perms = {
        int(e): np.random.default_rng([seed, int(e), 0xB47C]).permutation(num_videos)
        for e in np.unique(epochs)
    }
    return [(int(e), int(perms[int(e)][o])) for e, o in zip(epochs, offsets)]


class StepBatchSampler:
    """Batch sampler yielding :func:`batch_positions` for steps ``start..stop-1``."""

    def __init__(
        self,
        start: int,
        stop: int,
        batch_size: int,
        num_videos: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.start, self.stop = start, stop
        self.args = (batch_size, num_videos, seed, rank, world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch_size, num_videos, seed, rank, world_size = self.args
        for step in range(self.start, self.stop):
            yield batch_positions(step, batch_size, num_videos, seed, rank, world_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class EpochItems(Dataset):
    """Indexes a ``VideoClipDataset`` by ``(epoch, video)`` (the clip depends only on those)."""

    def __init__(self, clips: Any) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        self.clips.set_epoch(epoch)
        return self.clips[index]


def collate_batch(clips: Any, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The collated batch of ``(epoch, video)`` keys (on CPU)."""
    items = EpochItems(clips)
    return torch.utils.data.default_collate([items[k] for k in keys])
