"""Self-supervised temporal losses: TCC cycle-consistency, TCN n-pairs, Shuffle-and-Learn.

* :mod:`tcc_model.losses.tcc`: ``compute_alignment_loss`` (the official TCC loss) and its parts;
* :mod:`tcc_model.losses.baselines`: ``tcn_npairs_loss``, ``sal_loss`` + ``SaLClassifier``,
  ``supervised_phase_loss``;
* :mod:`tcc_model.losses.checks`: the argument checks they share.
"""

from __future__ import annotations

from tcc_model.losses.baselines import (
    SaLClassifier,
    sal_loss,
    sample_sal_indices,
    supervised_phase_loss,
    tcn_npairs_loss,
)
from tcc_model.losses.tcc import (
    LOSS_TYPES,
    SIMILARITY_TYPES,
    compute_alignment_loss,
    cycle_back_loss,
    deterministic_alignment_logits,
    sample_cycles,
    scaled_similarity,
    stochastic_alignment_logits,
)

__all__ = [
    "LOSS_TYPES",
    "SIMILARITY_TYPES",
    "SaLClassifier",
    "compute_alignment_loss",
    "cycle_back_loss",
    "deterministic_alignment_logits",
    "sal_loss",
    "sample_cycles",
    "sample_sal_indices",
    "scaled_similarity",
    "stochastic_alignment_logits",
    "supervised_phase_loss",
    "tcn_npairs_loss",
]
