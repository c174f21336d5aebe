"""The HMM band filter: causal alignment of a live stream to the references, O(window) per frame.

States are reference frames, one chain per reference, vectorised over references: a
left-to-right transition kernel (stay / advance / short skips, small backward steps); emission
``exp(-d^2 / (2 tau^2))`` from the squared embedding distance, ``tau`` calibrated on nominal
data; the posterior lives in a band of ``window`` frames re-centred on its mode every frame, so
the cost per frame is ``O(R * window * D)``, independent of the reference length; references
are mixed by their (exponentially forgotten) evidence. Progress is the posterior mean of the
reference progress, its uncertainty the posterior std.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tcc_model.errors import ConfigError
from tcc_model.stream.config import EmbeddingEngine, MonitorConfig
from tcc_model.stream.monitor import MonitorBase, _pick, default_temperature
from tcc_model.stream.references import ReferenceSet, _within_phase_progress


class ProgressMonitor(MonitorBase):
    """Causal HMM alignment of a live stream to the references, ``O(window)`` per frame.

    See the module docstring for the model. ``process_embedding`` / ``process_frame`` return a
    :class:`FrameResult`; ``reset()`` starts a new episode.
    """

    def __init__(
        self,
        references: ReferenceSet,
        config: MonitorConfig | None = None,
        engine: EmbeddingEngine | None = None,
    ) -> None:
        super().__init__(references, config, engine)
        cfg = self.config
        refs = references
        self.temperature = _pick(cfg.temperature, refs.calibration.get("temperature"), None)
        if not math.isfinite(self.temperature):
            self.temperature = default_temperature(refs)
        self._inv_two_tau2 = 0.5 / self.temperature**2
        num = refs.num_references
        self._lengths = refs.lengths
        # Each reference is followed by `window` padding rows (zero embedding, infinite squared
        # norm => zero emission), so a band never needs clipping or a validity mask.
        pad = cfg.window
        blocks = self._lengths + pad
        self._offsets = np.concatenate([[0], np.cumsum(blocks)[:-1]]).astype(np.int64)

        def padded(arrays: Sequence[np.ndarray], fill: Any) -> np.ndarray:
            return np.concatenate(
                [
                    np.concatenate([a, np.repeat(a[-1:] if fill is None else fill, pad, 0)])
                    for a in arrays
                ]
            )

        # Distances use |e|^2 - 2 e.x + |x|^2 on embeddings centred on the reference mean
        # (translation-invariant; float32 resolution of a distance ~3e-4 x the centred norm).
        dim = refs.dim
        self._center = np.mean([e.mean(axis=0, dtype=np.float64) for e in refs.embeddings], axis=0)
        centred = [(e - self._center).astype(np.float32) for e in refs.embeddings]
        self._emb = padded(centred, np.zeros((1, dim), np.float32))
        sqnorm = [np.einsum("nd,nd->n", e, e, dtype=np.float64) for e in centred]
        self._sqnorm = padded(sqnorm, np.array([np.inf]))
        self._progress = padded(refs.progress, None)
        phase_bins = [np.where(p < 0, len(refs.phase_names), p) for p in refs.phase_ids]
        self._phase_bins = padded(phase_bins, None)
        self._phase_frac = padded([_within_phase_progress(p) for p in refs.phase_ids], None)
        self._window = cfg.window
        self._arange = np.arange(cfg.window)
        kernel = np.asarray(cfg.transition, dtype=np.float64)
        self._kernel = kernel / kernel.sum()
        self._kernel_offsets = cfg.transition_min_offset + np.arange(kernel.size)
        self._max_start = np.maximum(self._lengths - cfg.window, 0)
        self._rows = np.arange(num)
        # Banded transition matrix from band position i to extended position i + o - min_offset.
        span = kernel.size
        self._transition = np.zeros((cfg.window, cfg.window + span - 1))
        for o_index in range(span):
            self._transition[self._arange, self._arange + o_index] = self._kernel[o_index]
        self._spread = np.zeros((num, 3 * cfg.window + span - 1))
        self._reset_alignment()

    def _settings_changed(self, config: MonitorConfig) -> None:
        tau = _pick(config.temperature, self.references.calibration.get("temperature"), None)
        if not math.isfinite(tau):
            tau = default_temperature(self.references)
        if tau <= 0:
            raise ConfigError(f"monitor setting update: temperature must be > 0, got {tau}")
        self.temperature = tau
        self._inv_two_tau2 = 0.5 / tau**2

    def _reset_alignment(self) -> None:
        num = self.references.num_references
        self._start = np.zeros(num, dtype=np.int64)
        self._alpha = np.zeros((num, self._window))
        self._alpha[:, : max(1, self.config.start_frames)] = 1.0
        self._alpha *= self._valid_mask(self._start)
        self._alpha /= self._alpha.sum(axis=1, keepdims=True)
        self._evidence = np.zeros(num)
        self._started = False

    def _valid_mask(self, start: np.ndarray) -> np.ndarray:
        return (start[:, None] + self._arange[None, :]) < self._lengths[:, None]

    def _relocalise(self, emb: np.ndarray) -> None:
        """Centre every band on the global nearest neighbour (``start='anywhere'``, first frame)."""
        x = (emb - self._center).astype(np.float32)
        d2 = self._sqnorm - 2.0 * (self._emb @ x)
        for r in range(self.references.num_references):
            a, n = self._offsets[r], self._lengths[r]
            best = int(np.argmin(d2[a : a + n]))
            self._start[r] = min(max(best - self._window // 2, 0), self._max_start[r])
        self._alpha = self._valid_mask(self._start).astype(np.float64)
        self._alpha /= self._alpha.sum(axis=1, keepdims=True)

    def _predict(self) -> None:
        """Apply the transition kernel and move each band to its posterior mode."""
        mode = self._start + np.argmax(self._alpha, axis=1)
        new_start = np.minimum(np.maximum(mode - self.config.window_back, 0), self._max_start)
        shift = new_start - self._start  # |shift| < window
        # Convolve in old band coordinates (one small GEMM), then read the new band out of a
        # zero-padded buffer: pred[r, i] = sum_o k[o] * alpha[r, i + shift_r - o].
        width = self._transition.shape[1]
        self._spread[:, self._window : self._window + width] = self._alpha @ self._transition
        first = shift - self.config.transition_min_offset + self._window
        self._alpha = self._spread[self._rows[:, None], first[:, None] + self._arange[None, :]]
        self._start = new_start

    def _align(self, emb: np.ndarray) -> dict[str, Any]:
        if not self._started and self.config.start == "anywhere":
            self._relocalise(emb)
        if self._started:
            self._predict()
        self._started = True
        local = self._start[:, None] + self._arange[None, :]
        gidx = self._offsets[:, None] + local  # [R, W] rows of the padded references
        x = (emb - self._center).astype(np.float32)
        dots = (self._emb[gidx] @ x).astype(np.float64)
        d2 = np.maximum(self._sqnorm[gidx] - 2.0 * dots + float(x @ x), 0.0)
        loglik = d2 * -self._inv_two_tau2
        peak = loglik.max(axis=1, keepdims=True)
        post = (self._alpha + 1e-9 / self._window) * np.exp(loglik - peak)
        mass = post.sum(axis=1, keepdims=True)
        post /= mass
        self._alpha = post
        decay = self.config.evidence_decay
        self._evidence = decay * self._evidence + (np.log(mass[:, 0]) + peak[:, 0])
        weights = np.exp(self._evidence - self._evidence.max())
        weights /= weights.sum()

        prog = self._progress[gidx]
        mean_r = np.sum(post * prog, axis=1)
        second_r = np.sum(post * prog**2, axis=1)
        progress = float(weights @ mean_r)
        variance = float(weights @ second_r) - progress**2
        best = int(np.argmax(weights))
        mode = int(np.argmax(post[best]))
        joint = post * weights[:, None]
        phases = self._phase_bins[gidx]
        phase_probs = np.bincount(
            phases.ravel(), weights=joint.ravel(), minlength=self.num_phases + 1
        )[: self.num_phases]
        phase_probs /= max(phase_probs.sum(), 1e-12)
        frac = self._phase_frac[gidx]

        def phase_progress(phase_id: int) -> float:
            if phase_id < 0:
                return float("nan")
            in_phase = joint * (phases == phase_id)
            total = in_phase.sum()
            return float(np.sum(in_phase * frac) / total) if total > 0 else float("nan")

        return {
            "progress": min(max(progress, 0.0), 1.0),
            "progress_std": float(math.sqrt(max(variance, 0.0))),
            "reference_id": self.references.reference_ids[best],
            "reference_frame": int(local[best, mode]),
            "reference_length": int(self._lengths[best]),
            "distance": float(np.sqrt(d2.min())),
            "phase_probs": phase_probs,
            "phase_progress_fn": phase_progress,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Filter state (band starts, posteriors, evidence) as arrays."""
        return {
            "start": self._start.copy(),
            "alpha": self._alpha.copy(),
            "evidence": self._evidence.copy(),
            "started": np.array(self._started),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` (same references and config)."""
        if np.shape(state["alpha"]) != self._alpha.shape:
            raise ValueError(
                f"state alpha shape {np.shape(state['alpha'])} != {self._alpha.shape}: "
                "the state was saved with other references or another window"
            )
        self._start = np.asarray(state["start"], dtype=np.int64).copy()
        self._alpha = np.asarray(state["alpha"], dtype=np.float64).copy()
        self._evidence = np.asarray(state["evidence"], dtype=np.float64).copy()
        self._started = bool(state["started"])
