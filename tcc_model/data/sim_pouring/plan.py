"""The dataset plan: every episode's name, split, simulation seed and anomaly, from ``--seed``.

Splits and anomalies: episodes are shuffled into the splits by ``split_fractions`` (largest
remainder rounding). Within every split, ``round(rate * n_split)`` episodes are anomalous, the four
anomaly types in equal shares; in ``train`` at least one episode stays normal (unless the rate is
1). Nothing here imports MuJoCo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tcc_model.data.format import ANOMALY_TYPES, SPLITS

DATASET_NAME = "sim_pouring"
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
_PLAN_STREAM = 0x5EED  # keeps the split/anomaly plan's random stream apart from episode seeds


@dataclass(frozen=True)
class EpisodePlan:
    """What to generate for one episode: its name, split, simulation seed and anomaly."""

    index: int
    name: str
    split: str
    seed: int
    anomaly: str | None


def episode_seed(seed: int, index: int) -> int:
    """Simulation seed of episode ``index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def split_counts(episodes: int, fractions: Sequence[float]) -> list[int]:
    """Episodes per split: ``episodes * fractions`` rounded by largest remainder (sums exactly)."""
    exact = np.asarray(fractions, dtype=np.float64) * episodes
    counts = np.floor(exact).astype(int)
    remainder = episodes - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return [int(c) for c in counts]


def plan_dataset(
    episodes: int,
    anomaly_rate: float = 0.0,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> list[EpisodePlan]:
    """Deterministic plan (split, anomaly, seed) of every episode, in episode order."""
    _check_dataset_args(episodes, anomaly_rate, split_fractions)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    order = rng.permutation(episodes)
    split_of = np.empty(episodes, dtype=object)
    start = 0
    for split, count in zip(SPLITS, split_counts(episodes, split_fractions)):
        split_of[order[start : start + count]] = split
        start += count
    anomaly_of: list[str | None] = [None] * episodes
    for split in SPLITS:
        members = np.flatnonzero(split_of == split)
        count = round(anomaly_rate * len(members))
        if split == "train" and anomaly_rate < 1.0:
            count = min(count, max(len(members) - 1, 0))  # keep a normal episode to train on
        chosen = np.sort(rng.choice(members, size=count, replace=False))
        kinds = rng.permutation(np.resize(np.arange(len(ANOMALY_TYPES)), count))
        for index, kind in zip(chosen, kinds):
            anomaly_of[int(index)] = ANOMALY_TYPES[int(kind)]
    width = max(5, len(str(episodes - 1)))
    return [
        EpisodePlan(i, f"ep{i:0{width}d}", str(split_of[i]), episode_seed(seed, i), anomaly_of[i])
        for i in range(episodes)
    ]


def _check_dataset_args(
    episodes: int, anomaly_rate: float, split_fractions: Sequence[float]
) -> None:
    if int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly_rate must be in [0, 1], got {anomaly_rate}")
    fractions = list(split_fractions)
    if len(fractions) != len(SPLITS) or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(
            f"split_fractions must be {len(SPLITS)} numbers in [0, 1] for {'/'.join(SPLITS)}, "
            f"got {fractions}"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
