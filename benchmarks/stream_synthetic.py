"""Synthetic episodes for ``bench_stream.py --synthetic``: embeddings and thumbnails of a task.

The embedding follows a smooth random curve with the pouring simulator's timing statistics
(per-segment speeds, short natural pauses); the 16 x 16 thumbnail is a fixed scene (per-episode
layout and lighting offsets) plus an arm whose appearance follows the pose. Anomalies: ``stall``
(everything freezes), ``reversed`` (the motion runs backwards for a while), ``drop`` (the scene
changes for good and the embedding leaves the trajectory), ``skip`` (a phase never happens). It
measures the monitor, not a learned model.
"""

from __future__ import annotations

import numpy as np

from tcc_model.data.format import progress_from_key_events
from tcc_model.reference import EmbeddedEpisode

PHASE_NAMES = ["approach", "grasp_lift", "pour", "return", "release"]
PIXELS = 16 * 16 * 3


class SyntheticTask:
    """A smooth random trajectory in R^D standing in for a learned embedding of the task."""

    def __init__(
        self, dim: int = 128, seed: int = 0, fps: float = 12.0, noise: float = 0.06
    ) -> None:
        rng = np.random.default_rng(seed)
        terms = 6
        self.dim, self.fps, self.noise = dim, fps, noise
        self.amp = rng.normal(size=(terms, dim)) / np.arange(1, terms + 1)[:, None] / np.sqrt(dim)
        self.phase = rng.uniform(0, 2 * np.pi, size=(terms, dim))
        self.freq = np.arange(1, terms + 1)[:, None]
        self.arm = rng.normal(size=(8, PIXELS)) * 0.08  # pose -> thumbnail
        self.scene = rng.uniform(0.2, 0.8, size=PIXELS)
        self.rng = np.random.default_rng(seed + 1)

    def pose(self, s: np.ndarray) -> np.ndarray:
        """Arm pose along task time: out and back (states are revisited)."""
        return np.interp(s, [0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0], [0, 0.35, 0.7, 0.9, 0.7, 0.35, 0.05])

    def curve(self, s: np.ndarray) -> np.ndarray:
        """Embedding of task time ``s``: the pose plus the scene state (fill level), weaker."""
        return self._smooth(self.pose(s), 0) + 0.3 * self._smooth(np.asarray(s), 1)

    def _smooth(self, u: np.ndarray, which: int) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)[:, None, None]
        amp = self.amp if which == 0 else self.amp[::-1]
        return np.sum(amp * np.sin(np.pi * self.freq * u + self.phase * (1 + which)), axis=1)

    def pixels(self, s: np.ndarray, layout: np.ndarray) -> np.ndarray:
        """Thumbnails ``[N, 768]``: scene + layout offset + the arm at its pose + noise."""
        pose = self.pose(s)[:, None]
        basis = np.concatenate([np.sin(np.pi * k * pose) for k in range(1, 9)], axis=1)
        px = self.scene + layout + basis @ self.arm
        return np.clip(px + self.rng.normal(scale=0.004, size=px.shape), 0, 1).astype(np.float32)

    def timeline(self) -> np.ndarray:
        """Curve parameter per frame: random segment speeds plus short natural pauses."""
        rng, k = self.rng, len(PHASE_NAMES)
        parts = []
        for p in range(k):
            n = max(3, int(round(rng.uniform(0.9, 2.0) * self.fps)))
            parts.append(p / k + (np.arange(n) / n) / k)
            if rng.random() < 0.3:  # natural pause 0.2-0.6 s
                parts.append(np.full(int(rng.uniform(0.2, 0.6) * self.fps), parts[-1][-1]))
        return np.concatenate(parts + [np.ones(1)])

    def _anomalous_time(self, s: np.ndarray, anomaly: str) -> tuple[np.ndarray, int]:
        rng, k, fps = self.rng, len(PHASE_NAMES), self.fps
        if anomaly == "stall":
            onset = int(rng.integers(len(s) // 5, 4 * len(s) // 5))
            freeze = np.full(int(rng.uniform(2.0, 3.5) * fps), s[onset])
            return np.concatenate([s[:onset], freeze, s[onset:]]), onset
        if anomaly == "reversed":
            onset = int(rng.integers(len(s) // 4, 3 * len(s) // 4))
            back = int(rng.uniform(0.6, 1.2) * fps)
            return np.concatenate(
                [s[:onset], s[onset : max(onset - back, 0) : -1], s[onset - back :]]
            ), onset
        if anomaly == "skip":
            skipped = int(rng.integers(1, k - 1))
            keep = (s < skipped / k) | (s >= (skipped + 1) / k)
            return s[keep], int(np.argmax(~keep))
        if anomaly == "drop":
            return s, int(rng.integers(len(s) // 4, 3 * len(s) // 4))
        raise ValueError(f"unknown synthetic anomaly {anomaly!r}")

    def episode(self, anomaly: str | None = None, name: str = "") -> EmbeddedEpisode:
        rng, k, fps = self.rng, len(PHASE_NAMES), self.fps
        s, onset = (
            (self.timeline(), -1)
            if anomaly is None
            else self._anomalous_time(self.timeline(), anomaly)
        )
        layout = rng.normal(scale=0.05, size=PIXELS)
        style = rng.normal(scale=self.noise / 2, size=self.dim) / np.sqrt(self.dim)
        emb = (
            self.curve(s)
            + style
            + rng.normal(scale=self.noise / np.sqrt(self.dim), size=(len(s), self.dim))
        )
        pixels = self.pixels(s, layout)
        if anomaly == "drop":  # the object falls: the scene changes for good
            ramp = np.clip((np.arange(len(s)) - onset + 1) / (0.5 * fps), 0.0, 1.0)[:, None]
            spot = np.zeros(PIXELS)
            spot[rng.choice(PIXELS, PIXELS // 8, replace=False)] = 0.25
            pixels = np.clip(pixels + ramp * spot, 0, 1).astype(np.float32)
            direction = rng.normal(size=self.dim)
            direction *= 0.3 * np.linalg.norm(self.amp.sum(0)) / np.linalg.norm(direction)
            emb = emb + ramp * direction
        phase_ids = np.minimum((s * k).astype(int), k - 1)
        events = [int(np.argmax(phase_ids >= p)) for p in range(1, k) if (phase_ids >= p).any()]
        return EmbeddedEpisode(
            name=name,
            embeddings=emb.astype(np.float32),
            pixels=pixels,
            stamps=np.arange(len(s)) / fps,
            progress=progress_from_key_events(len(s), events)
            if anomaly is None
            else np.full(len(s), np.nan),
            phase_ids=phase_ids,
            fps=fps,
            anomaly=anomaly,
            onset=onset,
        )

    def key_events(self, episode: EmbeddedEpisode) -> dict[str, int]:
        ids = episode.phase_ids
        return {PHASE_NAMES[p]: int(np.argmax(ids >= p)) for p in range(1, len(PHASE_NAMES))}
