"""Baseline temporal losses: TCN n-pairs, Shuffle-and-Learn and supervised phase labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcc_model.losses.checks import _check_embeddings, _check_integer_tensor, _check_positive_int


def tcn_npairs_loss(embs: Tensor, reg_lambda: float = 0.002) -> Tensor:
    """Time-contrastive n-pairs loss of ``embs [B, 2T, D]`` interleaved ``[p0, s0, p1, s1, ...]``.

    Per video: anchors ``embs[0::2]`` (the positives sampled just before each step), positives
    ``embs[1::2]``; ``CE(A @ P^T, identity)`` averaged over frames plus
    ``0.25 * reg_lambda * (mean |a|^2 + mean |p|^2)``; then averaged over videos. The negatives
    are the other frames of the same video.
    """
    _check_embeddings(embs)
    if embs.shape[1] % 2:
        raise ValueError(
            f"embs.shape[1] must be even (interleaved positive/anchor frames), got {embs.shape[1]}"
        )
    anchors, positives = embs[:, 0::2], embs[:, 1::2]
    num_videos, num_steps = anchors.shape[:2]
    logits = anchors @ positives.transpose(1, 2)  # [B, T, T]
    targets = torch.arange(num_steps, device=embs.device).repeat(num_videos)
    xent = F.cross_entropy(logits.reshape(-1, num_steps), targets)
    regulariser = (
        0.25 * reg_lambda * (anchors.pow(2).sum(-1).mean() + positives.pow(2).sum(-1).mean())
    )
    return xent + regulariser


class SaLClassifier(nn.Module):
    """Shuffle-and-Learn order classifier: ``3*D -> 128 ReLU -> 64 ReLU -> 2`` logits."""

    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        _check_positive_int(embedding_size, "embedding_size")
        self.embedding_size = embedding_size
        self.layers = nn.Sequential(
            nn.Linear(3 * embedding_size, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 2),
        )

    def forward(self, triplets: Tensor) -> Tensor:
        """``triplets [N, 3*D]`` (three concatenated embeddings) -> logits ``[N, 2]``."""
        return self.layers(triplets)


def sample_sal_indices(
    batch_size: int,
    num_steps: int,
    num_samples: int = 8,
    shuffle_fraction: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample Shuffle-and-Learn triplets as the reference does.

    ``M = batch_size * num_samples`` samples; sample ``n`` uses video ``n % batch_size``. Each draws
    5 distinct sorted frame indices ``a<b<c<d<e`` (all rows reversed together on one coin flip);
    ordered samples are ``(b, c, d)`` with label 0, shuffled ones ``(b, a, d)`` or ``(b, e, d)``
    (p = 0.5 each) with label 1; exactly ``int(shuffle_fraction * M)`` samples are shuffled.

    Returns ``(video [M], frames [M, 3], labels [M])`` (int64, on the generator's device).
    """
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(num_steps, "num_steps", minimum=5)
    _check_positive_int(num_samples, "num_samples")
    if not 0.0 <= shuffle_fraction <= 1.0:
        raise ValueError(f"shuffle_fraction must be in [0, 1], got {shuffle_fraction!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    total = batch_size * num_samples
    num_shuffled = int(shuffle_fraction * total)
    labels = (torch.randperm(total, generator=generator, device=device) < num_shuffled).long()
    scores = torch.rand(total, num_steps, generator=generator, device=device)
    five = scores.argsort(dim=1)[:, :5].sort(dim=1).values
    if bool(torch.rand((), generator=generator, device=device) >= 0.5):
        five = five.flip(1)
    take_first = torch.rand(total, generator=generator, device=device) <= 0.5
    outer = torch.where(take_first, five[:, 0], five[:, 4])
    middle = torch.where(labels.bool(), outer, five[:, 2])
    frames = torch.stack([five[:, 1], middle, five[:, 3]], dim=1)
    video = torch.arange(total, device=device) % batch_size
    return video, frames, labels


def sal_loss(
    embs: Tensor,
    classifier: nn.Module,
    num_samples: int = 8,
    shuffle_fraction: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shuffle-and-Learn loss of ``embs [B, T, D]`` (``T >= 5``) with ``classifier`` (3D -> 2)."""
    _check_embeddings(embs)
    num_videos, num_steps, _ = embs.shape
    if num_steps < 5:
        raise ValueError(f"embs needs at least 5 frames per video for SaL, got T={num_steps}")
    video, frames, labels = sample_sal_indices(
        num_videos, num_steps, num_samples, shuffle_fraction, generator
    )
    video, frames, labels = video.to(embs.device), frames.to(embs.device), labels.to(embs.device)
    triplets = embs[video.unsqueeze(1), frames].flatten(1)  # [M, 3*D]
    return F.cross_entropy(classifier(triplets), labels)


def supervised_phase_loss(logits: Tensor, phase_ids: Tensor) -> Tensor:
    """Cross-entropy of per-frame phase ``logits [..., C]`` against ``phase_ids [...]``.

    Frames labelled ``-1`` are ignored; with no labelled frame the loss is 0 (still connected to
    the graph).
    """
    _check_embeddings(logits, "logits", ndim=None)
    if logits.dim() < 2:
        raise ValueError(f"logits must be [..., C], got shape {tuple(logits.shape)}")
    phase_ids = _check_integer_tensor(
        phase_ids, "phase_ids", tuple(logits.shape[:-1]), logits.device
    )
    num_classes = logits.shape[-1]
    if bool((phase_ids >= num_classes).any()) or bool((phase_ids < -1).any()):
        raise ValueError(f"phase_ids must be in [-1, {num_classes}) (-1 = unlabelled)")
    flat_logits, flat_ids = logits.reshape(-1, num_classes), phase_ids.reshape(-1)
    if not bool((flat_ids >= 0).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_ids, ignore_index=-1)
