"""Self-supervised temporal losses: TCC cycle-consistency, TCN n-pairs, Shuffle-and-Learn.

``compute_alignment_loss`` reproduces the loss of the official TCC implementation
(google-research ``tcc/tcc/alignment.py``) exactly, vectorised over all pairs of videos:

* similarities (``'l2'`` = negative squared L2 distance clamped at 0, ``'cosine'`` = plain dot
  product) are divided by the embedding size ``D`` and then by the temperature;
* the deterministic loss aligns every ordered pair ``(i, j)``, ``i != j`` (``B(B-1)`` alignments)
  and averages over all ``B(B-1)T`` cycle-back rows;
* classification uses Keras label smoothing (``onehot * (1 - eps) + eps / T``);
* regression targets are the (optionally length-normalised) frame indices ``steps`` of the starting
  video, never smoothed and without gradient; ``variance_lambda`` multiplies ``log(sigma^2)``
  (the paper writes ``lambda * log(sigma)``, so this lambda is half the paper's).

Two defects of the reference are fixed on purpose: stochastic matching samples genuinely random
cycles (see ``sample_cycles``), and the Huber / MSE heads work without legacy Keras symbols.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_TYPES = ("classification", "regression_mse", "regression_mse_var", "regression_huber")
SIMILARITY_TYPES = ("l2", "cosine")

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


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_embeddings(embs: Tensor, name: str = "embs", ndim: int | None = 3) -> None:
    """Require a finite, non-empty floating-point tensor (with ``ndim`` dimensions if given)."""
    if not isinstance(embs, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(embs).__name__}")
    if ndim is not None and embs.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(embs.shape)}")
    if not embs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {embs.dtype}")
    if embs.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(embs.shape)}")
    if not bool(torch.isfinite(embs).all()):
        raise ValueError(
            f"{name} contains NaN or Inf values; check the model output / learning rate"
        )


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_integer_tensor(
    x: object, name: str, shape: tuple[int, ...], device: torch.device
) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be an integer tensor of shape {shape}") from err
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (frame indices), got dtype {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x.to(device=device, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# TCC building blocks
# --------------------------------------------------------------------------------------------


def _similarity_from_products(
    dots: Tensor,
    query_sq_norms: Tensor,
    key_sq_norms: Tensor,
    similarity_type: str,
    channels: int,
    temperature: float,
) -> Tensor:
    """Scaled similarity from dot products ``[..., N, M]`` and squared norms of both sides."""
    if similarity_type == "l2":
        squared_distance = query_sq_norms.unsqueeze(-1) + key_sq_norms.unsqueeze(-2) - 2.0 * dots
        similarity = -squared_distance.clamp_min(0.0)
    elif similarity_type == "cosine":
        similarity = dots
    else:
        raise ValueError(
            f"similarity_type must be one of {SIMILARITY_TYPES}, got {similarity_type!r}"
        )
    return similarity / channels / temperature


def scaled_similarity(
    queries: Tensor, keys: Tensor, similarity_type: str, temperature: float
) -> Tensor:
    """Similarity ``[..., N, M]`` between ``queries [..., N, D]`` and ``keys [..., M, D]``.

    ``'l2'``: ``-max(|q|^2 + |k|^2 - 2 q.k, 0)``; ``'cosine'``: ``q.k`` (no normalisation).
    Both are divided by ``D`` and then by ``temperature``, as in the reference.
    """
    return _similarity_from_products(
        queries @ keys.transpose(-1, -2),
        queries.pow(2).sum(-1),
        keys.pow(2).sum(-1),
        similarity_type,
        queries.shape[-1],
        temperature,
    )


def deterministic_alignment_logits(
    embs: Tensor, similarity_type: str = "l2", temperature: float = 0.1
) -> tuple[Tensor, Tensor]:
    """Cycle-back logits of every ordered pair of distinct videos.

    For the pair ``(i, j)`` every frame ``u_t`` of video ``i`` takes its soft nearest neighbour
    ``v~_t = softmax(sim(u_t, V)) @ V`` in video ``j``; the logits are ``sim(v~_t, U)``.

    Returns ``(logits [P, T, T], start_video [P])`` with ``P = B(B-1)``, pairs in row-major order
    (``i`` outer, ``j`` inner); row ``t`` of ``logits[p]`` should classify frame ``t``.
    """
    num_videos, num_steps, channels = embs.shape
    off_diagonal = ~torch.eye(num_videos, dtype=torch.bool, device=embs.device)
    start_video, other_video = off_diagonal.nonzero(as_tuple=True)
    # Everything below is expressed through the Gram matrix of all frames, so no [P, T, D]
    # tensor is materialised: with U = embs[i], V = embs[j] and alpha = softmax(sim(U, V)),
    #   v~_t . u_k = (alpha @ V U^T)[t, k]   and   |v~_t|^2 = ((alpha @ V V^T) * alpha)[t].sum().
    flat = embs.reshape(num_videos * num_steps, channels)
    gram = (flat @ flat.T).reshape(num_videos, num_steps, num_videos, num_steps).transpose(1, 2)
    sq_norms = embs.pow(2).sum(-1)  # [B, T]
    u_sq, v_sq = sq_norms[start_video], sq_norms[other_video]  # [P, T]
    sim_uv = _similarity_from_products(
        gram[start_video, other_video], u_sq, v_sq, similarity_type, channels, temperature
    )
    alpha = torch.softmax(sim_uv, -1)  # [P, T, T]
    neighbour_dot_u = alpha @ gram[other_video, start_video]
    neighbour_sq = ((alpha @ gram[other_video, other_video]) * alpha).sum(-1)
    logits = _similarity_from_products(
        neighbour_dot_u, neighbour_sq, u_sq, similarity_type, channels, temperature
    )
    return logits, start_video


def sample_cycles(
    num_cycles: int,
    batch_size: int,
    cycle_length: int,
    num_steps: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample random cycles for stochastic matching.

    Each cycle starts at a uniformly random video, visits ``cycle_length - 1`` further videos
    (each different from the previous one and the last one different from the start) and returns
    to the start; the start frame is uniform over ``num_steps``. Sampled on the generator's device
    (CPU by default).

    Returns ``(cycles [num_cycles, cycle_length + 1], start_frames [num_cycles])`` (int64);
    ``cycles[:, -1] == cycles[:, 0]``.
    """
    _check_positive_int(num_cycles, "num_cycles")
    _check_positive_int(batch_size, "batch_size", minimum=2)
    _check_positive_int(cycle_length, "cycle_length", minimum=2)
    _check_positive_int(num_steps, "num_steps")
    if batch_size == 2 and cycle_length % 2:
        raise ValueError(
            f"cycle_length={cycle_length} is impossible with batch_size=2 (consecutive videos must "
            "differ); use an even cycle_length or a larger batch"
        )
    device = generator.device if generator is not None else torch.device("cpu")

    def randint(high: int) -> Tensor:
        return torch.randint(0, high, (num_cycles,), generator=generator, device=device)

    start = randint(batch_size)
    videos = [start]
    for hop in range(1, cycle_length):
        previous = videos[-1]
        if hop < cycle_length - 1:  # any video except the previous one
            videos.append((previous + 1 + randint(batch_size - 1)) % batch_size)
            continue
        # Last stop: differ from the previous video and from the start (1 or 2 exclusions).
        two_excluded = previous != start
        num_allowed = batch_size - 1 - two_excluded.long()
        uniform = torch.rand(num_cycles, generator=generator, device=device)
        rank = torch.minimum((uniform * num_allowed).long(), num_allowed - 1)
        low, high = torch.minimum(previous, start), torch.maximum(previous, start)
        video = rank + (rank >= low).long()
        video = video + ((video >= high) & two_excluded).long()
        videos.append(video)
    videos.append(start)
    return torch.stack(videos, 1), randint(num_steps)


def stochastic_alignment_logits(
    embs: Tensor,
    cycles: Tensor,
    start_frames: Tensor,
    similarity_type: str = "l2",
    temperature: float = 0.1,
) -> Tensor:
    """Cycle-back logits ``[N, T]`` of the given cycles (``[N, L+1]``, start frames ``[N]``).

    The query starts as ``embs[cycles[:, 0], start_frames]``; at every hop it is replaced by its
    soft nearest neighbour in the next video. The logits are the similarities of the last hop
    (towards the frames of the start video).
    """
    query = embs[cycles[:, 0], start_frames].unsqueeze(1)  # [N, 1, D]
    similarity = query.new_empty(0)
    for hop in range(1, cycles.shape[1]):
        candidates = embs[cycles[:, hop]]  # [N, T, D]
        similarity = scaled_similarity(query, candidates, similarity_type, temperature)  # [N,1,T]
        query = torch.softmax(similarity, -1) @ candidates
    return similarity.squeeze(1)


def cycle_back_loss(
    logits: Tensor,
    targets: Tensor,
    positions: Tensor,
    loss_type: str = "classification",
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
) -> Tensor:
    """Mean cycle-back loss over rows.

    Args:
        logits: ``[R, T]`` cycle-back logits over the frames of the starting video.
        targets: ``[R]`` index of the frame each row started from.
        positions: ``[R, T]`` time of each frame of the starting video (regression only; the
            regression target is ``positions[r, targets[r]]``). No gradient flows into it.
        loss_type: one of ``LOSS_TYPES``.
    """
    if loss_type == "classification":
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    positions = positions.detach().to(logits.dtype)
    beta = torch.softmax(logits, -1)
    true_time = positions.gather(1, targets.unsqueeze(1)).squeeze(1)
    pred_time = (beta * positions).sum(-1)
    if loss_type == "regression_mse":
        return (true_time - pred_time).pow(2).mean()
    if loss_type == "regression_mse_var":
        variance = (beta * (positions - pred_time.unsqueeze(1)).pow(2)).sum(-1)
        log_variance = variance.log()
        squared_error = (true_time - pred_time).pow(2)
        return (torch.exp(-log_variance) * squared_error + variance_lambda * log_variance).mean()
    if loss_type == "regression_huber":
        return F.huber_loss(pred_time, true_time, delta=huber_delta)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def compute_alignment_loss(
    embs: Tensor,
    batch_size: int,
    steps: Tensor | None = None,
    seq_lens: Tensor | None = None,
    stochastic_matching: bool = False,
    normalize_embeddings: bool = False,
    loss_type: str = "classification",
    similarity_type: str = "l2",
    num_cycles: int = 20,
    cycle_length: int = 2,
    temperature: float = 0.1,
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
    normalize_indices: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Temporal cycle-consistency loss of a batch of embedded videos (scalar tensor).

    Args:
        embs: ``[B, T, D]`` per-frame embeddings (floating point, finite).
        batch_size: ``B`` (checked against ``embs``; at least 2).
        steps: ``[B, T]`` integer frame indices of the embedded frames in their videos; default
            ``0..T-1``. Used by the regression losses only.
        seq_lens: ``[B]`` integer video lengths (``steps`` must lie in ``[0, seq_len)``);
            default ``T``. With ``normalize_indices`` the regression times are ``steps/seq_len``.
        stochastic_matching: align ``num_cycles`` random cycles of ``cycle_length`` hops instead
            of every ordered pair of videos. Cycles come from ``sample_cycles`` (optionally with
            ``generator``): genuinely random. The reference's generator is degenerate: its cycles
            are cyclic shifts ``(k, k+1, ..., k)``, and always ``(0, 1, 0)`` when
            ``num_cycles % B == 0`` (its training default ``num_cycles = B*T``).
        normalize_embeddings: L2-normalise ``embs`` along ``D`` first.
        loss_type: ``'classification'`` (cycle-back classification, label-smoothed CE),
            ``'regression_mse'``, ``'regression_mse_var'`` (MSE / variance + ``variance_lambda
            * log variance``) or ``'regression_huber'`` (Huber with ``huber_delta``).
        similarity_type: ``'l2'`` or ``'cosine'``; both scaled by ``1/D`` and ``1/temperature``.
        num_cycles, cycle_length: stochastic matching only (``cycle_length`` hops per cycle).
        label_smoothing: classification only; Keras convention ``onehot * (1 - eps) + eps / T``.
        variance_lambda: ``regression_mse_var`` weight of ``log(variance)`` (half the paper's
            lambda, which multiplies ``log(sigma)``).
        normalize_indices: divide ``steps`` by ``seq_lens`` for the regression losses.
        generator: random source of stochastic matching (default: torch's global CPU RNG).

    Returns:
        The mean loss over all ``B(B-1)T`` deterministic rows (or ``num_cycles`` cycles).
    """
    _check_embeddings(embs)
    _check_choice(loss_type, LOSS_TYPES, "loss_type")
    _check_choice(similarity_type, SIMILARITY_TYPES, "similarity_type")
    _check_positive_int(batch_size, "batch_size", minimum=2)
    num_videos, num_steps, _ = embs.shape
    if batch_size != num_videos:
        raise ValueError(
            f"batch_size={batch_size} does not match embs.shape[0]={num_videos}; pass the number "
            "of videos in embs"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta!r}")

    device = embs.device
    if seq_lens is None:
        seq_lens = torch.full((num_videos,), num_steps, dtype=torch.long, device=device)
    else:
        seq_lens = _check_integer_tensor(seq_lens, "seq_lens", (num_videos,), device)
        if bool((seq_lens < 1).any()):
            raise ValueError("seq_lens must be >= 1 for every video")
    if steps is None:
        steps = torch.arange(num_steps, device=device).expand(num_videos, num_steps)
    else:
        steps = _check_integer_tensor(steps, "steps", (num_videos, num_steps), device)
    if bool(((steps < 0) | (steps >= seq_lens.unsqueeze(1))).any()):
        raise ValueError(
            "steps must lie in [0, seq_len) of their video; pass seq_lens with the full video "
            "lengths"
        )

    if normalize_embeddings:
        embs = F.normalize(embs, p=2.0, dim=-1, eps=1e-12)
    positions = steps.to(embs.dtype)
    if normalize_indices:
        positions = positions / seq_lens.to(embs.dtype).unsqueeze(1)

    if stochastic_matching:
        _check_positive_int(num_cycles, "num_cycles")
        cycles, start_frames = sample_cycles(
            num_cycles, num_videos, cycle_length, num_steps, generator
        )
        cycles, start_frames = cycles.to(device), start_frames.to(device)
        logits = stochastic_alignment_logits(
            embs, cycles, start_frames, similarity_type, temperature
        )
        targets = start_frames
        row_positions = positions[cycles[:, 0]]
    else:
        pair_logits, start_video = deterministic_alignment_logits(
            embs, similarity_type, temperature
        )
        num_pairs = pair_logits.shape[0]
        logits = pair_logits.reshape(num_pairs * num_steps, num_steps)
        targets = torch.arange(num_steps, device=device).repeat(num_pairs)
        row_positions = positions[start_video].repeat_interleave(num_steps, dim=0)
    return cycle_back_loss(
        logits, targets, row_positions, loss_type, label_smoothing, variance_lambda, huber_delta
    )


# --------------------------------------------------------------------------------------------
# Baselines: TCN, Shuffle-and-Learn, supervised
# --------------------------------------------------------------------------------------------


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
