"""Tests of tcc_model.losses against an independent float64 loop implementation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import reference_tcc_numpy as ref
import torch
import torch.nn.functional as F

from tcc_model.losses import (
    LOSS_TYPES,
    SIMILARITY_TYPES,
    SaLClassifier,
    compute_alignment_loss,
    sal_loss,
    sample_cycles,
    sample_sal_indices,
    scaled_similarity,
    supervised_phase_loss,
    tcn_npairs_loss,
)

# Non-default hyper-parameters, so a head that ignores one of them is caught.
HYPER = dict(temperature=0.3, label_smoothing=0.15, variance_lambda=0.01, huber_delta=0.05)


def _random_batch(seed: int, num_videos: int = 3, num_steps: int = 4, dim: int = 3):
    """Embeddings plus sorted distinct frame indices from videos of random length."""
    rng = np.random.default_rng(seed)
    embs = 0.7 * rng.standard_normal((num_videos, num_steps, dim))
    seq_lens = rng.integers(num_steps + 1, 40, size=num_videos)
    steps = np.stack([np.sort(rng.choice(n, num_steps, replace=False)) for n in seq_lens])
    return embs, steps, seq_lens


def _torch_loss(embs: np.ndarray, steps, seq_lens, dtype: torch.dtype, **kwargs):
    x = torch.tensor(embs, dtype=dtype, requires_grad=True)
    loss = compute_alignment_loss(
        x, x.shape[0], steps=torch.as_tensor(steps), seq_lens=torch.as_tensor(seq_lens), **kwargs
    )
    loss.backward()
    return loss.item(), x.grad.double().numpy()


COMBINATIONS = list(itertools.product(LOSS_TYPES, SIMILARITY_TYPES, (True, False), (True, False)))


@pytest.mark.parametrize(
    "loss_type,similarity_type,normalize_indices,normalize_embeddings", COMBINATIONS
)
def test_deterministic_loss_matches_reference_value_and_gradient(
    loss_type, similarity_type, normalize_indices, normalize_embeddings
):
    seed = COMBINATIONS.index((loss_type, similarity_type, normalize_indices, normalize_embeddings))
    embs, steps, seq_lens = _random_batch(seed)
    options = dict(
        loss_type=loss_type,
        similarity_type=similarity_type,
        normalize_indices=normalize_indices,
        normalize_embeddings=normalize_embeddings,
        **HYPER,
    )

    def reference(x: np.ndarray) -> float:
        return ref.alignment_loss(x, steps, seq_lens, **options)

    expected = reference(embs)
    expected_grad = ref.numerical_gradient(reference, embs)
    assert np.abs(expected_grad).max() > 1e-6

    value64, grad64 = _torch_loss(embs, steps, seq_lens, torch.float64, **options)
    np.testing.assert_allclose(value64, expected, rtol=1e-9)
    np.testing.assert_allclose(grad64, expected_grad, rtol=1e-5, atol=1e-7)

    value32, grad32 = _torch_loss(embs, steps, seq_lens, torch.float32, **options)
    np.testing.assert_allclose(value32, expected, rtol=1e-5, atol=1e-7)
    scale = np.abs(expected_grad).max()
    np.testing.assert_allclose(grad32, expected_grad, rtol=1e-3, atol=1e-4 * scale)


def test_squared_l2_distance_is_clamped_at_zero():
    # |a|^2 + |b|^2 - 2a.b cancels catastrophically for large, nearly equal vectors.
    gen = torch.Generator().manual_seed(0)
    embs = 1000.0 + 1e-3 * torch.randn(64, 8, generator=gen)
    similarity = scaled_similarity(embs, embs, "l2", temperature=0.1)
    assert (similarity <= 0).all()


def test_library_defaults_are_the_reference_defaults():
    embs, _, _ = _random_batch(100, num_videos=4, num_steps=5, dim=6)
    steps = np.tile(np.arange(5), (4, 1))
    seq_lens = np.full(4, 5)
    expected = ref.alignment_loss(
        embs, steps, seq_lens, "classification", "l2", 0.1, 0.1, 0.001, 0.1, True, False
    )
    got = compute_alignment_loss(torch.tensor(embs), 4)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-9)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("stochastic", [False, True])
def test_gradients_are_finite_and_non_zero(loss_type, stochastic):
    torch.manual_seed(0)
    embs = torch.randn(4, 12, 16, requires_grad=True)
    loss = compute_alignment_loss(
        embs,
        4,
        loss_type=loss_type,
        stochastic_matching=stochastic,
        num_cycles=48,
        generator=torch.Generator().manual_seed(1),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embs.grad).all()
    assert embs.grad.abs().sum() > 0


def _smooth_trajectory(num_steps: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    time = torch.linspace(0, 1, num_steps).unsqueeze(1)
    freqs = torch.rand(1, dim, generator=gen) * 6 + 1
    return 3.0 * torch.sin(2 * math.pi * time * freqs + torch.rand(1, dim, generator=gen))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aligned_videos_score_lower_than_frames_shuffled_across_videos(loss_type):
    num_videos, num_steps, dim = 4, 16, 8
    trajectory = _smooth_trajectory(num_steps, dim, seed=3)
    gen = torch.Generator().manual_seed(4)
    aligned = trajectory.expand(num_videos, -1, -1) + 0.01 * torch.randn(
        num_videos, num_steps, dim, generator=gen
    )
    flat = aligned.reshape(-1, dim)
    mixed = flat[torch.randperm(flat.shape[0], generator=gen)].reshape(aligned.shape)
    loss_aligned = compute_alignment_loss(aligned, num_videos, loss_type=loss_type)
    loss_mixed = compute_alignment_loss(mixed, num_videos, loss_type=loss_type)
    assert loss_aligned < loss_mixed


def test_classification_is_invariant_to_frame_order_within_videos():
    # Cycle-back classification only looks at embeddings, so a frame permutation of any video
    # permutes rows but not their losses.
    torch.manual_seed(5)
    embs = torch.randn(3, 7, 5)
    permuted = embs.clone()
    permuted[1] = embs[1, torch.randperm(7)]
    a = compute_alignment_loss(embs, 3, similarity_type="cosine")
    b = compute_alignment_loss(permuted, 3, similarity_type="cosine")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ stochastic matching


@pytest.mark.parametrize(
    "batch_size,cycle_length", [(2, 2), (2, 4), (3, 2), (3, 3), (5, 4), (6, 5)]
)
def test_sampled_cycles_are_valid(batch_size, cycle_length):
    cycles, frames = sample_cycles(
        500, batch_size, cycle_length, 9, generator=torch.Generator().manual_seed(0)
    )
    assert cycles.shape == (500, cycle_length + 1) and frames.shape == (500,)
    assert cycles.dtype == torch.long and frames.dtype == torch.long
    assert ((cycles >= 0) & (cycles < batch_size)).all()
    assert (cycles[:, -1] == cycles[:, 0]).all()
    assert (cycles[:, 1:] != cycles[:, :-1]).all()
    assert ((frames >= 0) & (frames < 9)).all()


def test_sampled_cycles_are_genuinely_varied():
    cycles, frames = sample_cycles(6000, 4, 2, 10, generator=torch.Generator().manual_seed(1))
    pairs = torch.bincount(cycles[:, 0] * 4 + cycles[:, 1], minlength=16).reshape(4, 4)
    assert (pairs.diagonal() == 0).all()
    off_diagonal = pairs[~torch.eye(4, dtype=torch.bool)].double()
    # All 12 ordered pairs, each about 500 times (binomial sd ~ 21).
    assert off_diagonal.min() > 400 and off_diagonal.max() < 600
    assert torch.bincount(frames, minlength=10).min() > 450
    long_cycles, _ = sample_cycles(3000, 5, 3, 4, generator=torch.Generator().manual_seed(2))
    assert len({tuple(c) for c in long_cycles.tolist()}) == 5 * 4 * 3  # every valid 3-cycle


def test_cycle_sampling_is_reproducible_with_a_generator():
    a = sample_cycles(50, 6, 3, 8, generator=torch.Generator().manual_seed(9))
    b = sample_cycles(50, 6, 3, 8, generator=torch.Generator().manual_seed(9))
    c = sample_cycles(50, 6, 3, 8, generator=torch.Generator().manual_seed(10))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("similarity_type", SIMILARITY_TYPES)
def test_stochastic_loss_matches_reference_for_the_sampled_cycles(loss_type, similarity_type):
    embs, steps, seq_lens = _random_batch(11, num_videos=4, num_steps=5, dim=3)
    options = dict(loss_type=loss_type, similarity_type=similarity_type, **HYPER)
    cycles, frames = sample_cycles(30, 4, 3, 5, generator=torch.Generator().manual_seed(3))

    def reference(x: np.ndarray) -> float:
        return ref.stochastic_alignment_loss(
            x, cycles.numpy(), frames.numpy(), steps, seq_lens, **options
        )

    x = torch.tensor(embs, requires_grad=True)
    got = compute_alignment_loss(
        x,
        4,
        steps=torch.tensor(steps),
        seq_lens=torch.tensor(seq_lens),
        stochastic_matching=True,
        num_cycles=30,
        cycle_length=3,
        generator=torch.Generator().manual_seed(3),
        **options,
    )
    got.backward()
    np.testing.assert_allclose(got.item(), reference(embs), rtol=1e-9)
    np.testing.assert_allclose(
        x.grad.numpy(), ref.numerical_gradient(reference, embs), rtol=1e-5, atol=1e-7
    )


def test_stochastic_expectation_matches_deterministic_loss():
    torch.manual_seed(12)
    embs = torch.randn(3, 6, 4, dtype=torch.float64)
    deterministic = compute_alignment_loss(embs, 3).item()
    stochastic = compute_alignment_loss(
        embs,
        3,
        stochastic_matching=True,
        num_cycles=40000,
        cycle_length=2,
        generator=torch.Generator().manual_seed(0),
    ).item()
    assert stochastic == pytest.approx(deterministic, rel=0.03)


# ------------------------------------------------------------------ TCN, SaL, supervised


def test_tcn_matches_reference():
    rng = np.random.default_rng(0)
    embs = rng.standard_normal((3, 10, 4))
    got = tcn_npairs_loss(torch.tensor(embs), reg_lambda=0.05)
    np.testing.assert_allclose(got.item(), ref.tcn_npairs_loss(embs, 0.05), rtol=1e-9)


def test_tcn_loss_is_small_for_well_separated_pairs():
    num_steps = 6
    codes = 10.0 * torch.eye(num_steps)  # anchor t == positive t, orthogonal across t
    embs = torch.stack([codes, codes], dim=1).reshape(1, 2 * num_steps, num_steps).repeat(2, 1, 1)
    assert tcn_npairs_loss(embs, reg_lambda=0.0).item() < 1e-6
    # Regulariser: 0.25 * lambda * (|a|^2 + |p|^2) = 0.25 * 0.002 * 200.
    assert tcn_npairs_loss(embs).item() == pytest.approx(0.1, abs=1e-6)
    shuffled = embs.clone()
    shuffled[:, 1::2] = embs[:, 1::2].roll(1, dims=1)
    assert tcn_npairs_loss(shuffled, reg_lambda=0.0).item() > 50


def test_sal_indices_follow_the_reference_sampling():
    for seed in range(6):
        video, frames, labels = sample_sal_indices(
            4,
            12,
            num_samples=8,
            shuffle_fraction=0.75,
            generator=torch.Generator().manual_seed(seed),
        )
        assert video.tolist() == [n % 4 for n in range(32)]
        assert int(labels.sum()) == int(0.75 * 32)
        b, middle, d = frames.unbind(1)
        assert ((frames >= 0) & (frames < 12)).all()
        increasing = bool((b < d).all())
        assert increasing or bool((b > d).all())  # one reversal flip for the whole batch
        between = ((middle - b) * (d - middle)) > 0
        assert torch.equal(between, labels == 0)


def test_sal_reversal_and_outer_choice_both_happen():
    directions, outer_sides = set(), set()
    for seed in range(20):
        _, frames, labels = sample_sal_indices(2, 10, generator=torch.Generator().manual_seed(seed))
        directions.add(bool(frames[0, 0] < frames[0, 2]))
        shuffled = frames[labels == 1]
        outer_sides.update(
            ((shuffled[:, 1] < shuffled[:, 0]) == (shuffled[:, 0] < shuffled[:, 2])).tolist()
        )
    assert directions == {True, False}
    assert outer_sides == {True, False}


def test_sal_loss_value_and_gradients():
    classifier = SaLClassifier(embedding_size=5)
    torch.nn.init.zeros_(classifier.layers[-1].weight)
    torch.nn.init.zeros_(classifier.layers[-1].bias)
    embs = torch.randn(3, 9, 5, requires_grad=True)
    loss = sal_loss(embs, classifier, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)  # zero logits
    loss.backward()
    assert classifier.layers[-1].weight.grad.abs().sum() > 0
    assert classifier(torch.zeros(7, 15)).shape == (7, 2)


@pytest.mark.slow
def test_sal_classifier_learns_frame_order():
    torch.manual_seed(0)
    num_steps = 16
    embs = torch.linspace(-1, 1, num_steps).reshape(1, num_steps, 1).repeat(4, 1, 4)
    classifier = SaLClassifier(embedding_size=4)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(300):
        loss = sal_loss(embs, classifier, num_samples=16, generator=gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])


def test_supervised_phase_loss_ignores_unlabelled_frames():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, requires_grad=True)
    phase_ids = torch.tensor([[0, 1, 2, -1, -1], [0, 0, 2, 1, -1]])
    loss = supervised_phase_loss(logits, phase_ids)
    flat, ids = logits.detach().reshape(-1, 3).numpy(), phase_ids.reshape(-1).numpy()
    labelled = ids >= 0
    log_probs = flat - np.log(np.exp(flat).sum(1, keepdims=True))
    expected = -log_probs[labelled, ids[labelled]].mean()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    loss.backward()
    assert (logits.grad[0, 3:] == 0).all() and logits.grad[0, :3].abs().sum() > 0
    empty = supervised_phase_loss(logits, torch.full((2, 5), -1))
    assert empty.item() == 0.0 and empty.requires_grad


# ------------------------------------------------------------------ input validation


def _embs(b=3, t=5, d=4):
    return torch.randn(b, t, d)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(embs=torch.randn(3, 5)), "embs"),
        (dict(embs=torch.randint(0, 5, (3, 5, 4))), "embs"),
        (dict(embs=np.zeros((3, 5, 4))), "embs"),
        (dict(embs=torch.full((3, 5, 4), float("nan"))), "embs"),
        (dict(batch_size=4), "batch_size"),
        (dict(embs=_embs(b=1), batch_size=1), "batch_size"),
        (dict(loss_type="regression"), "loss_type"),
        (dict(similarity_type="dot"), "similarity_type"),
        (dict(steps=torch.zeros(3, 4, dtype=torch.long)), "steps"),
        (dict(steps=torch.zeros(3, 5)), "steps"),
        (dict(steps=torch.full((3, 5), 5)), "steps"),
        (dict(steps=torch.full((3, 5), -1)), "steps"),
        (dict(steps=torch.full((3, 5), 7), seq_lens=torch.tensor([8, 8, 7])), "steps"),
        (dict(seq_lens=torch.tensor([5, 5])), "seq_lens"),
        (dict(seq_lens=torch.tensor([5.0, 5.0, 5.0])), "seq_lens"),
        (dict(seq_lens=torch.tensor([5, 0, 5])), "seq_lens"),
        (dict(temperature=0.0), "temperature"),
        (dict(label_smoothing=1.5), "label_smoothing"),
        (dict(huber_delta=-1.0), "huber_delta"),
        (dict(stochastic_matching=True, num_cycles=0), "num_cycles"),
        (dict(stochastic_matching=True, cycle_length=1), "cycle_length"),
        (
            dict(embs=_embs(b=2), batch_size=2, stochastic_matching=True, cycle_length=3),
            "cycle_length",
        ),
    ],
)
def test_alignment_loss_rejects_bad_input(kwargs, argument):
    arguments = dict(embs=_embs(), batch_size=3)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        compute_alignment_loss(**arguments)


def test_baseline_losses_reject_bad_input():
    with pytest.raises(ValueError, match="embs"):
        tcn_npairs_loss(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="embs"):
        sal_loss(torch.randn(2, 4, 3), SaLClassifier(3))
    with pytest.raises(ValueError, match="shuffle_fraction"):
        sample_sal_indices(2, 8, shuffle_fraction=1.5)
    with pytest.raises(ValueError, match="phase_ids"):
        supervised_phase_loss(torch.randn(4, 3), torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="phase_ids"):
        supervised_phase_loss(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="embedding_size"):
        SaLClassifier(0)


def test_loss_agrees_with_plain_cross_entropy_without_smoothing():
    # With label_smoothing=0 and two videos, classification = mean CE of the two alignments.
    torch.manual_seed(2)
    embs = torch.randn(2, 6, 3, dtype=torch.float64)
    loss = compute_alignment_loss(embs, 2, label_smoothing=0.0, similarity_type="cosine")
    rows = []
    for i, j in [(0, 1), (1, 0)]:
        alpha = torch.softmax(embs[i] @ embs[j].T / 3 / 0.1, -1)
        logits = (alpha @ embs[j]) @ embs[i].T / 3 / 0.1
        rows.append(F.cross_entropy(logits, torch.arange(6), reduction="none"))
    torch.testing.assert_close(loss, torch.cat(rows).mean())
