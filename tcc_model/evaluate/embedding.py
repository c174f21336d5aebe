"""Embedding a dataset split for evaluation: :class:`EmbeddedVideo` and :func:`embed_split`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EmbeddedVideo:
    """Per-frame embeddings of one episode plus the labels the protocols need."""

    name: str
    embs: np.ndarray
    phase_ids: np.ndarray | None
    phase_names: list[str] = field(default_factory=list)
    key_events: dict[str, int] = field(default_factory=dict)
    anomaly: str | None = None
    anomaly_mask: np.ndarray | None = None
    fps: float = 30.0
    episode: Any = None  # tcc_model.data.format.Episode, to reload frames for videos

    @property
    def is_normal(self) -> bool:
        return self.anomaly is None


def embed_split(
    model: Any,
    dataset: str,
    split: str,
    data_root: str | Path | None = None,
    max_videos: int | None = None,
    progress: bool = True,
    dataset_kwargs: dict[str, Any] | None = None,
) -> list[EmbeddedVideo]:
    """Load ``split`` of ``dataset`` (registry name) and embed every frame of every episode.

    ``dataset_kwargs`` go to :func:`tcc_model.data.registry.resolve_dataset` (simulator size,
    episodes, seed, cache folder); see :func:`dataset_kwargs_from_checkpoint`.
    """
    from tcc_model.data.registry import load_dataset_split
    from tcc_model.embed import embed_episodes

    episodes = load_dataset_split(
        dataset, split, data_root=data_root, progress=progress, **(dataset_kwargs or {})
    )
    if max_videos is not None:
        episodes = episodes[:max_videos]
    all_embs = embed_episodes(model, episodes, progress=progress)
    return [_embedded(ep, embs) for ep, embs in zip(episodes, all_embs)]


def dataset_kwargs_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Simulator dataset options the checkpoint was trained with, so evaluation sees the same data.

    As in training, the simulator renders at the model's image size unless ``data.sim_size`` is set.
    """
    config = ckpt.get("config") or {}
    data = config.get("data") or {}
    kwargs: dict[str, Any] = {}
    if data.get("cache_dir") is not None:
        kwargs["cache_dir"] = data["cache_dir"]
    if data.get("sim_episodes") is not None:
        kwargs["sim_episodes"] = int(data["sim_episodes"])
    size = data.get("sim_size") or (config.get("model") or {}).get("image_size")
    if size is not None:
        kwargs["sim_size"] = int(size)
    if data.get("sim_seed") is not None:
        kwargs["sim_seed"] = int(data["sim_seed"])
    return kwargs


def _embedded(episode: Any, embs: np.ndarray) -> EmbeddedVideo:
    labels = episode.labels
    return EmbeddedVideo(
        name=episode.name,
        embs=np.asarray(embs),
        phase_ids=None if labels.phase_ids is None else np.asarray(labels.phase_ids, np.int64),
        phase_names=list(labels.phase_names),
        key_events=dict(labels.key_events),
        anomaly=labels.anomaly,
        anomaly_mask=None if labels.anomaly_mask is None else np.asarray(labels.anomaly_mask),
        fps=float(labels.fps),
        episode=episode,
    )
