"""TCC cycle-consistency losses (cycle-back classification and regression).

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
from torch import Tensor

from tcc_model.losses.checks import (
    _check_choice,
    _check_embeddings,
    _check_integer_tensor,
    _check_positive_int,
)

LOSS_TYPES = ("classification", "regression_mse", "regression_mse_var", "regression_huber")
SIMILARITY_TYPES = ("l2", "cosine")


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


def _frame_positions(
    embs: Tensor, steps: Tensor | None, seq_lens: Tensor | None, normalize_indices: bool
) -> Tensor:
    """Regression times ``[B, T]`` of the embedded frames: ``steps`` (default ``0..T-1``),
    divided by ``seq_lens`` (default ``T``) when ``normalize_indices``; both checked."""
    num_videos, num_steps, _ = embs.shape
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
    positions = steps.to(embs.dtype)
    if normalize_indices:
        positions = positions / seq_lens.to(embs.dtype).unsqueeze(1)
    return positions


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

    (Long for its argument list and this documentation; the body is 44 lines.)
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
    positions = _frame_positions(embs, steps, seq_lens, normalize_indices)
    if normalize_embeddings:
        embs = F.normalize(embs, p=2.0, dim=-1, eps=1e-12)

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
