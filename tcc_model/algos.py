"""Training algorithms: one place mapping ``--algo`` to the loss of a batch.

``tcc``, ``tcn``, ``sal``, ``tcc+tcn``, ``tcc+sal``, ``tcc+sal+tcn`` and ``supervised``, as the
reference trainer (``tcc/algos/``) defines them:

* TCC: :func:`tcc_model.losses.compute_alignment_loss` (default ``regression_mse_var``).
* TCN: n-pairs loss; the sampler draws a positive just before every step (2T frames per video).
* SaL: Shuffle-and-Learn triplet order classifier (:class:`~tcc_model.losses.SaLClassifier`).
* Combinations: ``w_a*TCC + w_s*SaL + (1-w_a-w_s)*TCN`` (defaults 0.33/0.33/0.34); ``tcc+tcn``
  sets ``w_s=0``, ``tcc+sal`` uses ``w_s = 1-w_a``. Whenever TCN is involved, frames are sampled
  TCN-style (2T) and TCC/SaL see, per video, either the even or the odd half (coin flip).
* ``supervised``: a linear phase classifier on the embeddings, cross-entropy on phase labels.

Every algorithm adds the L2 regularisation of the reference: ``l2_weight`` times the *mean* over
regularised tensors of their sum of squares (weights and biases of the convolution/linear layers
of the head, and of the encoder when it is trained from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from tcc_model.config import from_mapping, to_dict
from tcc_model.errors import ConfigError
from tcc_model.losses import (
    SaLClassifier,
    compute_alignment_loss,
    sal_loss,
    supervised_phase_loss,
    tcn_npairs_loss,
)

AlgoName = Literal["tcc", "tcn", "sal", "tcc+tcn", "tcc+sal", "tcc+sal+tcn", "supervised"]
ALGOS: tuple[str, ...] = get_args(AlgoName)


@dataclass
class AlgoConfig:
    """Loss hyper-parameters (the reference ``CONFIG.ALIGNMENT/TCN/SAL/ALIGNMENT_SAL_TCN``)."""

    # training algorithm (see the module docstring)
    name: AlgoName = "tcc"
    # TCC: cycle-back loss (classification or regression to the cycled-back index)
    loss_type: Literal[
        "classification", "regression_mse", "regression_mse_var", "regression_huber"
    ] = "regression_mse_var"
    # TCC: similarity of embeddings, negative squared L2 distance or cosine
    similarity_type: Literal["l2", "cosine"] = "l2"
    # TCC: softmax temperature of the soft nearest neighbour
    temperature: float = 0.1
    # TCC classification loss: label smoothing
    label_smoothing: float = 0.1
    # TCC regression_mse_var: weight of the log-variance term
    variance_lambda: float = 0.001
    # TCC regression_huber: Huber delta
    huber_delta: float = 0.1
    # TCC: regress frame indices divided by the video length
    normalize_indices: bool = True
    # TCC: L2-normalise embeddings before the similarity
    normalize_embeddings: bool = False
    # TCC: random cycles (num_cycles = int(B * T * fraction)) instead of every frame
    stochastic_matching: bool = False
    # TCC: videos in a cycle
    cycle_length: int = 2
    # TCC stochastic matching: fraction of frames that start a cycle
    fraction: float = 1.0
    # TCN: the positive is drawn from this many frames before the anchor
    tcn_positive_window: int = 5
    # TCN: weight of the embedding-norm regulariser
    tcn_reg_lambda: float = 0.002
    # SaL: triplets per video
    sal_num_samples: int = 8
    # SaL: fraction of shuffled (negative) triplets
    sal_shuffle_fraction: float = 0.75
    # combinations: weight of TCC
    alignment_weight: float = 0.33
    # tcc+sal+tcn: weight of SaL (TCN gets the rest)
    sal_weight: float = 0.33
    # L2 regularisation weight (mean of the layers' sums of squares)
    l2_weight: float = 1e-5

    def __post_init__(self) -> None:
        if self.name not in ALGOS:
            raise ConfigError(f"unknown algo {self.name!r}; valid: {', '.join(ALGOS)}")
        checks = [
            ("temperature", self.temperature > 0, "> 0"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "in [0, 1)"),
            ("variance_lambda", self.variance_lambda >= 0, ">= 0"),
            ("huber_delta", self.huber_delta > 0, "> 0"),
            ("cycle_length", self.cycle_length >= 2, ">= 2"),
            ("fraction", 0.0 < self.fraction <= 1.0, "in (0, 1]"),
            ("tcn_positive_window", self.tcn_positive_window >= 1, ">= 1"),
            ("sal_num_samples", self.sal_num_samples >= 1, ">= 1"),
            ("sal_shuffle_fraction", 0.0 <= self.sal_shuffle_fraction <= 1.0, "in [0, 1]"),
            ("l2_weight", self.l2_weight >= 0, ">= 0"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"algo.{key}={getattr(self, key)!r}: expected {expected}")
        if self.name == "tcc+sal+tcn":
            w_tcn = 1.0 - self.alignment_weight - self.sal_weight
            if min(self.alignment_weight, self.sal_weight, w_tcn) < 0:
                raise ConfigError(
                    "algo.alignment_weight + algo.sal_weight must be <= 1 and both >= 0, got "
                    f"{self.alignment_weight} + {self.sal_weight}"
                )
        elif not 0.0 <= self.alignment_weight <= 1.0:
            raise ConfigError(
                f"algo.alignment_weight={self.alignment_weight}: expected a value in [0, 1]"
            )

    @property
    def uses_tcn_sampling(self) -> bool:
        """Whether clips hold a TCN positive before every step (2T frames per video)."""
        return "tcn" in self.name.split("+")

    def loss_weights(self) -> dict[str, float]:
        """Weight of each component loss."""
        parts = self.name.split("+")
        if self.name == "supervised":
            return {"supervised": 1.0}
        if len(parts) == 1:
            return {parts[0]: 1.0}
        w_a = self.alignment_weight
        if self.name == "tcc+tcn":
            return {"tcc": w_a, "tcn": 1.0 - w_a}
        if self.name == "tcc+sal":
            return {"tcc": w_a, "sal": 1.0 - w_a}
        return {"tcc": w_a, "sal": self.sal_weight, "tcn": 1.0 - w_a - self.sal_weight}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (YAML/JSON/checkpoint friendly)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlgoConfig:
        """Inverse of :meth:`to_dict`: keys and value types checked (ConfigError naming them)."""
        return from_mapping(cls, d, "algo")


def l2_regularization(modules: list[nn.Module], weight: float) -> Tensor:
    """``weight *`` mean over the Conv/Linear weights and biases of ``modules`` of ``sum(w**2)``."""
    layer_types = (nn.Conv2d, nn.Conv3d, nn.Linear)
    tensors = [
        p
        for module in modules
        for layer in module.modules()
        if isinstance(layer, layer_types)
        for p in layer.parameters(recurse=False)
        if p.requires_grad
    ]
    if not tensors or weight == 0:
        return torch.zeros(())
    return weight * torch.stack([p.pow(2).sum() for p in tensors]).mean()


def split_even_odd(
    embs: Tensor, steps: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Per video keep the even or the odd half of ``embs [B, 2T, D]`` / ``steps [B, 2T]``
    (one coin flip per video)."""
    b, two_t = steps.shape
    parity = torch.randint(0, 2, (b, 1), generator=generator).to(embs.device)
    idx = parity + 2 * torch.arange(two_t // 2, device=embs.device)  # [B, T]
    return embs.gather(1, idx.unsqueeze(-1).expand(-1, -1, embs.shape[-1])), steps.gather(1, idx)


class TrainingAlgo(nn.Module):
    """The loss of one algorithm; holds its trainable auxiliary modules (SaL / phase classifier)."""

    def __init__(self, cfg: AlgoConfig, embedding_size: int, num_phases: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights = cfg.loss_weights()
        self.sal_classifier = SaLClassifier(embedding_size) if "sal" in self.weights else None
        self.phase_classifier: nn.Linear | None = None
        if cfg.name == "supervised":
            if not num_phases or num_phases < 2:
                raise ValueError(
                    "algo 'supervised' needs phase labels with at least 2 phases; the dataset has "
                    f"{num_phases or 0} (label the episodes' phase_ids or pick another algo)"
                )
            self.phase_classifier = nn.Linear(embedding_size, num_phases)

    def _tcc(self, embs: Tensor, steps: Tensor, seq_lens: Tensor, gen) -> Tensor:
        c = self.cfg
        b, t = embs.shape[:2]
        return compute_alignment_loss(
            embs,
            b,
            steps=steps,
            seq_lens=seq_lens,
            stochastic_matching=c.stochastic_matching,
            normalize_embeddings=c.normalize_embeddings,
            loss_type=c.loss_type,
            similarity_type=c.similarity_type,
            num_cycles=max(1, int(b * t * c.fraction)),
            cycle_length=c.cycle_length,
            temperature=c.temperature,
            label_smoothing=c.label_smoothing,
            variance_lambda=c.variance_lambda,
            huber_delta=c.huber_delta,
            normalize_indices=c.normalize_indices,
            generator=gen,
        )

    def forward(
        self,
        embs: Tensor,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of ``embs [B, T', D]`` for ``batch`` (``steps [B, T']``, ``seq_len [B]``,
        ``phase_ids [B, T']``); ``T' = 2T`` with TCN sampling. Returns ``(loss, components)``.

        ``generator`` (CPU) drives every random choice, so a step is reproducible from its seed.
        """
        steps = batch["steps"].to(embs.device).long()
        seq_lens = batch["seq_len"].to(embs.device).long().reshape(-1)
        if embs.shape[0] < 2 and "tcc" in self.weights:
            raise ValueError(f"TCC needs at least 2 videos per batch, got {embs.shape[0]}")
        parts: dict[str, Tensor] = {}
        if "tcn" in self.weights:
            parts["tcn"] = tcn_npairs_loss(embs, reg_lambda=self.cfg.tcn_reg_lambda)
            if len(self.weights) > 1:
                embs, steps = split_even_odd(embs, steps, generator)
        if "tcc" in self.weights:
            parts["tcc"] = self._tcc(embs, steps, seq_lens, generator)
        if "sal" in self.weights:
            parts["sal"] = sal_loss(
                embs,
                self.sal_classifier,
                num_samples=self.cfg.sal_num_samples,
                shuffle_fraction=self.cfg.sal_shuffle_fraction,
                generator=generator,
            )
        if self.phase_classifier is not None:
            phase_ids = batch["phase_ids"].to(embs.device).long()
            if bool((phase_ids < 0).any()):
                raise ValueError("algo 'supervised' needs phase labels on every frame (got -1)")
            parts["supervised"] = supervised_phase_loss(self.phase_classifier(embs), phase_ids)
        loss = sum(self.weights[name] * value for name, value in parts.items())
        return loss, {name: float(value.detach()) for name, value in parts.items()}
