"""Baseline monitor: per-frame nearest neighbour over all reference frames, no temporal model."""

from __future__ import annotations

from typing import Any

import numpy as np

from tcc_model.stream.config import EmbeddingEngine, MonitorConfig
from tcc_model.stream.monitor import MonitorBase
from tcc_model.stream.references import ReferenceSet, _within_phase_progress


class NearestNeighborMonitor(MonitorBase):
    """Baseline: per-frame nearest neighbour over all reference frames, no temporal model.

    Same interface and anomaly rules as :class:`ProgressMonitor`; cost ``O(sum L_r * D)``.
    """

    def __init__(
        self,
        references: ReferenceSet,
        config: MonitorConfig | None = None,
        engine: EmbeddingEngine | None = None,
    ) -> None:
        super().__init__(references, config, engine)
        self._emb = np.concatenate(references.embeddings).astype(np.float32)
        self._sqnorm = np.einsum("nd,nd->n", self._emb, self._emb)
        self._progress = np.concatenate(references.progress)
        self._phase_ids = np.concatenate(references.phase_ids)
        self._phase_frac = np.concatenate([_within_phase_progress(p) for p in references.phase_ids])
        owner = np.repeat(np.arange(references.num_references), references.lengths)
        self._owner = owner
        self._local = (
            np.arange(owner.size) - np.concatenate([[0], np.cumsum(references.lengths)])[owner]
        )

    def _reset_alignment(self) -> None:
        pass

    def _align(self, emb: np.ndarray) -> dict[str, Any]:
        d2 = self._sqnorm - 2.0 * (self._emb @ emb) + emb @ emb
        i = int(np.argmin(d2))
        r = int(self._owner[i])
        probs = np.zeros(self.num_phases)
        if self.num_phases and self._phase_ids[i] >= 0:
            probs[self._phase_ids[i]] = 1.0
        frac = float(self._phase_frac[i])
        return {
            "progress": float(self._progress[i]),
            "progress_std": 0.0,
            "reference_id": self.references.reference_ids[r],
            "reference_frame": int(self._local[i]),
            "reference_length": int(self.references.lengths[r]),
            "distance": float(np.sqrt(max(d2[i], 0.0))),
            "phase_probs": probs,
            "phase_progress_fn": lambda phase_id: frac if phase_id >= 0 else float("nan"),
        }
