"""Episodes for ``bench_stream``: embedded with a bundle's engine (cached on disk) or synthetic.

The cache holds one ``.npz`` per (bundle, episode): the embeddings and the 16 x 16 thumbnails the
monitor's image detectors see. Its key is the bundle id (a hash of the model files), the backend,
the engine's image size and the episode's video file (absolute path, size, modification time),
so a new model or a re-rendered episode is embedded again and a re-run costs seconds. Plain
arrays only (no pickles); a damaged entry is embedded again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1


class EmbeddingCache:
    """Per-episode embeddings and thumbnails on disk, keyed by bundle and episode."""

    def __init__(self, root: str | Path, engine: Any, backend: str = "") -> None:
        self.engine = engine
        self.root = Path(root) / str(engine.bundle_id)[:16]
        self.backend = backend
        self.hits = self.misses = 0

    def key(self, episode: Any) -> str:
        """Hex key of an episode's video for this bundle, backend and image size."""
        video = Path(episode.video_path).resolve()
        stat = video.stat()
        text = "|".join(
            str(v)
            for v in (
                CACHE_FORMAT,
                self.engine.bundle_id,
                self.backend,
                self.engine.preprocess.image_size,
                video,
                stat.st_size,
                stat.st_mtime_ns,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def path(self, episode: Any) -> Path:
        return self.root / f"{episode.split}_{episode.name}_{self.key(episode)}.npz"

    def load(self, episode: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings [N, D], thumbnails [N, 768])`` of an episode: cached or computed."""
        path = self.path(episode)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    emb, pixels = data["embeddings"], data["pixels"]
                if len(emb) == len(pixels) == episode.num_frames:
                    self.hits += 1
                    return emb, pixels
            except (OSError, ValueError, KeyError):
                pass  # damaged entry: embed again
        emb, pixels = self._compute(episode)
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, embeddings=emb, pixels=pixels)
        os.replace(tmp, path)
        return emb, pixels

    def _compute(self, episode: Any) -> tuple[np.ndarray, np.ndarray]:
        from tcc_model.reference import embed_video
        from tcc_model.stream import thumbnails

        frames = episode.load_frames()
        emb = np.asarray(embed_video(self.engine, frames), dtype=np.float32)
        pixels = thumbnails(frames, self.engine.preprocess.image_size).astype(np.float32)
        return emb, pixels

    def embeddings(self, episode: Any) -> np.ndarray:
        return self.load(episode)[0]

    def embedded(self, episode: Any) -> Any:
        """The episode as :class:`tcc_model.reference.EmbeddedEpisode` (from the cache)."""
        from tcc_model.reference import embedded_episode

        emb, pixels = self.load(episode)
        return embedded_episode(episode, emb, pixels)


def synthetic_data(args: argparse.Namespace) -> tuple[Any, list, list, str]:
    """References, calibration and test episodes of the synthetic task."""
    from stream_synthetic import PHASE_NAMES, SyntheticTask

    from tcc_model.stream import ReferenceSet

    task = SyntheticTask(dim=args.dim, seed=args.seed, noise=args.noise)
    refs = [task.episode(name=f"ref{i:02d}") for i in range(args.references)]
    references = ReferenceSet.from_episodes(
        [r.embeddings for r in refs],
        [r.phase_ids for r in refs],
        PHASE_NAMES,
        [task.key_events(r) for r in refs],
        "synthetic",
        [r.name for r in refs],
        task.fps,
    )
    calib = [task.episode(name=f"calib{i}") for i in range(args.calib_episodes)]
    tests = [task.episode(name=f"normal{i}") for i in range(args.normal_episodes)]
    for kind in ("stall", "reversed", "drop", "skip"):
        tests += [task.episode(kind, f"{kind}{i}") for i in range(args.anomaly_episodes)]
    source = f"synthetic task (D={args.dim}, noise {args.noise}, seed {args.seed})"
    return references, calib, tests, source


def bundle_data(args: argparse.Namespace) -> tuple[Any, list, list, str]:
    """References, calibration and test episodes embedded with the bundle's engine (cached)."""
    from tcc_model.engine import load_bundle
    from tcc_model.reference import (
        build_references,
        load_episodes,
        normal_episodes,
        split_references,
    )

    engine = load_bundle(args.bundle, backend=args.backend, threads=args.threads)
    cache = EmbeddingCache(args.cache_dir, engine, args.backend)
    labelled = normal_episodes(load_episodes(args.dataset, args.ref_split))
    ref_eps, extra = split_references(labelled, args.references, args.classifier_videos)
    references = build_references(
        engine, ref_eps, classifier_episodes=extra, embed=cache.embeddings
    )
    calib_dataset = args.calib_dataset or args.dataset
    calib_eps = normal_episodes(load_episodes(calib_dataset, args.calib_split), args.calib_episodes)
    calib = [cache.embedded(e) for e in calib_eps]
    test_dataset = args.test_dataset or args.dataset
    test_eps = load_episodes(test_dataset, args.split)
    normals = [e for e in test_eps if e.labels.anomaly is None][: args.normal_episodes]
    tests = [cache.embedded(e) for e in normals + [e for e in test_eps if e.labels.anomaly]]
    source = (
        f"bundle {args.bundle}: {len(ref_eps)} references from {args.dataset}/{args.ref_split} "
        f"(phase classifier on {len(ref_eps) + len(extra)} videos of that split); calibration on "
        f"{len(calib)} normal episodes of {calib_dataset}/{args.calib_split}; evaluation on "
        f"{test_dataset}/{args.split}"
    )
    print(f"embedding cache {cache.root}: {cache.hits} episodes reused, {cache.misses} embedded")
    return references, calib, tests, source
