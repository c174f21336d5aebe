"""Streaming monitor on constructed trajectories whose alignment is known (no model needed)."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tcc_model.preprocess import PreprocessConfig, context_indices
from tcc_model.stream import (
    DEFAULT_PHASE_LAGS,
    DETECTORS,
    TEMPERATURE_FACTORS,
    FrameFeatureCache,
    MonitorConfig,
    NearestNeighborMonitor,
    PhaseTracker,
    ProgressMonitor,
    ReferenceSet,
    calibrate,
    choose_phase_source,
    conformal_upper,
    fit_phase_classifier,
    lagged_features,
    phase_probabilities,
)

DIM = 16
# Every detector that needs no pixels (these episodes are embeddings only).
# The embedding-only detectors these tests are about (stillness: test_stream_detectors.py).
EMBEDDING_DETECTORS = tuple(
    k for k, d in DETECTORS.items() if not d.needs_pixels and k != "stillness"
)
PHASES = ["reach", "lift", "pour", "place"]
FPS = 10.0


class SmoothPath:
    """A random smooth curve ``s in [0, 1] -> R^D`` (sum of sines)."""

    def __init__(self, seed: int, dim: int = DIM, terms: int = 5) -> None:
        rng = np.random.default_rng(seed)
        self.amp = rng.normal(size=(terms, dim)) / np.arange(1, terms + 1)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=(terms, dim))
        self.freq = np.arange(1, terms + 1)[:, None]

    def __call__(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)[:, None, None]
        return np.sum(self.amp * np.sin(np.pi * self.freq * s + self.phase), axis=1).astype(
            np.float32
        )


def phase_of(s: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(s) * len(PHASES)).astype(int), len(PHASES) - 1)


def make_references(
    paths: list[SmoothPath], lengths: list[int], seed: int = 0, noise: float = 0.01
) -> ReferenceSet:
    rng = np.random.default_rng(seed)
    embeddings, phase_ids, key_events = [], [], []
    for path, length in zip(paths, lengths):
        s = np.linspace(0.0, 1.0, length)
        embeddings.append(path(s) + rng.normal(scale=noise, size=(length, DIM)).astype(np.float32))
        ids = phase_of(s)
        phase_ids.append(ids)
        key_events.append({PHASES[k]: int(np.argmax(ids == k)) for k in range(1, len(PHASES))})
    return ReferenceSet.from_episodes(
        embeddings,
        phase_ids,
        PHASES,
        key_events,
        "bundle-a",
        [f"r{i}" for i in range(len(paths))],
        FPS,
    )


def live(path: SmoothPath, s: np.ndarray, seed: int = 1, noise: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return path(s) + rng.normal(scale=noise, size=(len(s), DIM)).astype(np.float32)


def warp(n: int, power: float) -> np.ndarray:
    """Monotone time warp ``t -> t**power`` sampled at ``n`` frames (progress ground truth)."""
    return np.linspace(0.0, 1.0, n) ** power


@pytest.fixture(scope="module")
def path() -> SmoothPath:
    return SmoothPath(seed=3)


@pytest.fixture(scope="module")
def calibrated(path: SmoothPath) -> ReferenceSet:
    refs = make_references([path, path], [100, 140])
    rng = np.random.default_rng(7)
    truths = [warp(int(rng.integers(80, 160)), rng.uniform(0.7, 1.4)) for _ in range(24)]
    episodes = [live(path, s, seed=100 + i) for i, s in enumerate(truths)]
    config = MonitorConfig(detectors=EMBEDDING_DETECTORS)
    calibrate(refs, episodes, false_alarm_rate=0.05, config=config, progress=truths)
    return refs


def progress_of(results) -> np.ndarray:
    return np.array([r.progress for r in results])


def test_time_warped_copies_progress_tracks_the_warp(path, calibrated):
    monitor = ProgressMonitor(calibrated)
    for n, power in [(90, 0.7), (150, 1.0), (200, 1.3)]:  # inside the calibrated range
        s = warp(n, power)
        results = monitor.run(live(path, s, seed=n))
        progress = progress_of(results)
        assert np.mean(np.abs(progress - s)) < 0.03, (n, power)
        assert not any(r.anomaly for r in results), [r.anomaly_description for r in results]
        # Causal phase accuracy against the phase of the true progress.
        phase = np.array([r.phase_id for r in results])
        assert np.mean(phase == phase_of(s)) > 0.9
        # every phase's probability is reported; it agrees with the phase shown away from changes
        probs = np.array([r.phase_probabilities for r in results])
        assert probs.shape == (len(results), len(calibrated.phase_names))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert np.mean(probs.argmax(axis=1) == phase) > 0.9
        assert all(0.0 <= r.phase_progress <= 1.0 for r in results)
        assert all(r.progress_std >= 0 for r in results)


def test_reference_of_different_length_from_live(path):
    refs = make_references([path], [40])
    s = warp(200, 1.0)  # live is five times longer than the reference
    results = ProgressMonitor(refs).run(live(path, s))
    assert np.mean(np.abs(progress_of(results) - s)) < 0.03
    assert results[-1].reference_length == 40
    assert results[-1].reference_frame >= 36


def test_pause_flags_stalled_after_threshold_and_progress_stays_flat(path, calibrated):
    s_normal = warp(120, 1.0)
    pause_at, pause_frames = 50, 40
    s = np.concatenate(
        [s_normal[:pause_at], np.full(pause_frames, s_normal[pause_at]), s_normal[pause_at:]]
    )
    monitor = ProgressMonitor(calibrated)
    results = monitor.run(live(path, s))
    limit = monitor.thresholds["progress_stall"]
    stalled = [r.frame_index for r in results if r.anomaly_kind == "stalled"]
    assert stalled, "the 4 s pause was not flagged"
    first = stalled[0]
    assert pause_at + limit * FPS - 3 <= first <= pause_at + limit * FPS + 6
    during = progress_of(results)[pause_at + 2 : pause_at + pause_frames]
    assert np.ptp(during) < 0.03
    onset = results[first]
    assert onset.frames_since_onset == 0 and results[first + 3].frames_since_onset == 3
    assert not any(r.anomaly for r in results[: pause_at + 5])


def test_reversal_flags_backwards(path, calibrated):
    s_normal = warp(120, 1.0)
    turn, back = 70, 30
    s = np.concatenate(
        [s_normal[:turn], s_normal[turn : turn - back : -1], s_normal[turn - back :]]
    )
    results = ProgressMonitor(calibrated).run(live(path, s))
    backwards = [r.frame_index for r in results if r.anomaly_kind == "backwards"]
    assert backwards and turn < backwards[0] <= turn + 12
    assert not any(r.anomaly for r in results[:turn])
    assert min(progress_of(results)[turn : turn + back]) < s_normal[turn] - 0.15


def test_off_trajectory_noise_is_flagged_quickly(path, calibrated):
    s = warp(120, 1.0)
    x = live(path, s)
    onset = 60
    x[onset : onset + 15] += (
        np.random.default_rng(5).normal(scale=1.0, size=(15, DIM)).astype(np.float32)
    )
    config = MonitorConfig()
    results = ProgressMonitor(calibrated, config).run(x)
    flagged = [r.frame_index for r in results if r.anomaly_kind == "off_trajectory"]
    assert flagged and flagged[0] - onset <= config.off_trajectory_m
    assert not any(r.anomaly for r in results[:onset])
    assert "distance" in results[flagged[0]].anomaly_description


def test_phase_jump_flags_phase_skipped(path, calibrated):
    # Jump from the middle of "lift" to the middle of "place": "pour" never happens.
    s = np.concatenate([np.linspace(0, 0.35, 50), np.linspace(0.85, 1.0, 30)])
    results = ProgressMonitor(calibrated).run(live(path, s))
    skipped = [r for r in results if r.anomaly_kind == "phase_skipped"]
    assert skipped and "pour" in skipped[0].anomaly_description
    assert 50 <= skipped[0].frame_index <= 56


def test_skip_evidence_is_one_minus_the_peak_of_the_jumped_phase():
    tracker = PhaseTracker(num_phases=4, margin=0.1)
    assert tracker.update(np.array([0.9, 0.1, 0.0, 0.0]))[0] == 0
    assert tracker.update(np.array([0.6, 0.3, 0.1, 0.0]))[0] == 0  # phase 1 peaks at 0.3
    phase, _, jumped, evidence = tracker.update(np.array([0.1, 0.2, 0.7, 0.0]))
    assert (phase, jumped) == (2, [1])
    assert evidence == pytest.approx(0.7)
    phase, _, jumped, evidence = tracker.update(np.array([0.0, 0.0, 0.1, 0.9]))
    assert (phase, jumped, evidence) == (3, [], 0.0)  # consecutive phase: no skip


def test_skip_detector_switches_off_when_normal_runs_skip_confidently(path):
    # Normal calibration runs that jump over "pour" as well: a jump is no evidence of an anomaly.
    refs = make_references([path, path], [100, 140])
    rng = np.random.default_rng(7)
    truths = []
    for i in range(24):
        s = warp(int(rng.integers(80, 160)), rng.uniform(0.7, 1.4))
        truths.append(s[(s < 0.5) | (s >= 0.75)] if i % 3 == 0 else s)
    episodes = [live(path, s, seed=100 + i) for i, s in enumerate(truths)]
    config = MonitorConfig(detectors=EMBEDDING_DETECTORS)
    cal = calibrate(refs, episodes, false_alarm_rate=0.05, config=config)
    state = cal["detector_states"]["phase_skip"]
    assert state["state"] == "off" and "could never fire" in state["reason"]
    s = np.concatenate([np.linspace(0, 0.35, 50), np.linspace(0.85, 1.0, 30)])
    monitor = ProgressMonitor(refs)
    results = monitor.run(live(path, s))
    assert not any(r.anomaly_kind == "phase_skipped" for r in results)
    # ... and the monitor says so (for /diagnostics) instead of staying silent.
    assert monitor.detector_states["phase_skip"].startswith("off: normal episodes reach")


def test_calibration_without_a_skip_threshold_is_reported(path, calibrated, caplog):
    # A calibration written before the phase-skip detector was calibrated has no skip threshold.
    old = ReferenceSet(
        **{
            **calibrated.__dict__,
            "calibration": {
                k: v for k, v in calibrated.calibration.items() if k != "skip_threshold"
            },
        }
    )
    with caplog.at_level("WARNING", logger="tcc_model.stream"):
        monitor = ProgressMonitor(old)
    assert math.isinf(monitor.thresholds["phase_skip"])
    assert "phase_skip off" in caplog.text and "tcc_model.reference" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tcc_model.stream"):
        ProgressMonitor(old, MonitorConfig(skip_threshold=0.8))  # configured: nothing to report
        ProgressMonitor(calibrated)
    assert caplog.text == ""


def test_several_references_pick_the_matching_one():
    paths = [SmoothPath(seed=11), SmoothPath(seed=12), SmoothPath(seed=13)]
    refs = make_references(paths, [80, 120, 100])
    s = warp(110, 1.2)
    results = ProgressMonitor(refs).run(live(paths[1], s))
    assert [r.reference_id for r in results[10:]].count("r1") >= 0.95 * len(results[10:])
    assert np.mean(np.abs(progress_of(results) - s)) < 0.03


def test_bad_embeddings_are_flagged_invalid_counted_and_skipped(path, calibrated):
    s = warp(60, 1.0)
    x = live(path, s)
    clean = ProgressMonitor(calibrated).run(x)
    monitor = ProgressMonitor(calibrated)
    monitor.reset()
    bad_inputs = [
        np.full(DIM, np.nan, np.float32),
        np.full(DIM, np.inf, np.float32),
        np.zeros(DIM + 1, np.float32),
        np.zeros((2, DIM), np.float32),
    ]
    mixed = []
    for i, e in enumerate(x):
        if i == 20:
            mixed += [monitor.process_embedding(b) for b in bad_inputs]
        mixed.append(monitor.process_embedding(e, stamp=i / FPS))
    invalid = [r for r in mixed if not r.valid]
    assert len(invalid) == monitor.invalid_frames == len(bad_inputs)
    assert all(math.isnan(r.progress) and r.phase_id == -1 and r.invalid_reason for r in invalid)
    valid = [r for r in mixed if r.valid]
    np.testing.assert_allclose(progress_of(valid), progress_of(clean), atol=1e-9)


def test_empty_references_raise():
    with pytest.raises(ValueError, match="no reference"):
        ReferenceSet([], [], PHASES, [], [], "b")
    with pytest.raises(ValueError, match="non-empty"):
        ReferenceSet([np.zeros((0, DIM))], [np.zeros(0)], PHASES, [np.zeros(0)], ["r"], "b")


def test_bundle_id_mismatch_raises(tmp_path, calibrated):
    engine = SimpleNamespace(bundle_id="bundle-b", preprocess=PreprocessConfig())
    with pytest.raises(ValueError, match="bundle-b"):
        ProgressMonitor(calibrated, engine=engine)
    calibrated.save(tmp_path)
    with pytest.raises(ValueError, match="rebuild"):
        ReferenceSet.load(tmp_path, bundle_id="bundle-b")


def test_save_load_round_trip_without_pickle(tmp_path, calibrated):
    npz_path, json_path = calibrated.save(tmp_path)
    with np.load(npz_path, allow_pickle=False) as data:
        assert data["embeddings"].dtype == np.float32
    loaded = ReferenceSet.load(tmp_path, bundle_id="bundle-a")
    assert loaded.reference_ids == calibrated.reference_ids
    assert loaded.phase_names == PHASES
    for a, b in zip(loaded.embeddings, calibrated.embeddings):
        np.testing.assert_array_equal(a, b)
    assert loaded.calibration["distance_threshold"] == calibrated.calibration["distance_threshold"]
    assert json.loads(json_path.read_text())["bundle_id"] == "bundle-a"


def test_calibrated_thresholds_keep_normal_runs_quiet_and_catch_anomalies(path, calibrated):
    cal = calibrated.calibration
    assert cal["num_episodes"] == 24 and cal["false_alarm_rate"] == 0.05
    # The temperature factor was chosen on the ground-truth progress among the candidates.
    assert set(cal["temperature_selection"]) == {str(f) for f in TEMPERATURE_FACTORS}
    best = min(cal["temperature_selection"], key=cal["temperature_selection"].get)
    assert cal["temperature_factor"] == float(best)
    assert cal["temperature"] == pytest.approx(cal["median_aligned_distance"] * float(best))
    assert all(math.isfinite(cal[k]) for k in ("distance_threshold", "stall_seconds"))
    monitor = ProgressMonitor(calibrated)
    rng = np.random.default_rng(99)
    false_alarms = sum(
        any(r.anomaly for r in monitor.run(live(path, warp(int(n), p), seed=500 + i)))
        for i, (n, p) in enumerate(zip(rng.integers(80, 160, 20), rng.uniform(0.75, 1.35, 20)))
    )
    assert false_alarms <= 1


def test_conformal_upper_bound_has_its_coverage():
    rng = np.random.default_rng(0)
    alpha, n = 0.1, 49
    exceed = []
    for _ in range(400):
        bound, method = conformal_upper(rng.normal(size=n), alpha)
        exceed.append(rng.normal() > bound)
        assert method == "conformal"
    assert np.mean(exceed) <= alpha + 0.04
    bound, method = conformal_upper([1.0, 2.0], 0.01, margin=1.5)
    assert method == "max_times_margin" and bound == 3.0


def test_reset_and_state_dict_reproduce_results(path, calibrated):
    x = live(path, warp(80, 1.1))
    monitor = ProgressMonitor(calibrated)
    first = progress_of(monitor.run(x))
    second = progress_of(monitor.run(x))
    np.testing.assert_array_equal(first, second)
    monitor.reset()
    for e in x[:40]:
        monitor.process_embedding(e)
    state = monitor.state_dict()
    other = ProgressMonitor(calibrated)
    other.load_state_dict(state)
    a = [monitor.process_embedding(e).progress for e in x[40:]]
    b = [other.process_embedding(e).progress for e in x[40:]]
    # Same filter state -> same alignment (anomaly trackers are per instance).
    np.testing.assert_allclose(a, b)


def test_nearest_neighbour_baseline_has_the_same_interface(path, calibrated):
    s = warp(100, 1.0)
    results = NearestNeighborMonitor(calibrated).run(live(path, s))
    assert len(results) == 100 and all(r.valid for r in results)
    assert np.mean(np.abs(progress_of(results) - s)) < 0.1


def test_cost_per_frame_is_bounded_by_the_window_not_the_reference_length(path):
    config = MonitorConfig(window=32, window_back=8)
    x = live(path, warp(50, 1.0))

    monitors = {n: ProgressMonitor(make_references([path], [n]), config) for n in (200, 50_000)}
    best = dict.fromkeys(monitors, math.inf)
    for _ in range(7):  # interleaved, best of 7: robust to other load on the machine
        for n, monitor in monitors.items():
            start = time.perf_counter()
            monitor.run(x)
            best[n] = min(best[n], (time.perf_counter() - start) / len(x) * 1e3)
    short, long = best[200], best[50_000]
    assert long < 3.0 * short, (short, long)


def test_feature_cache_matches_context_indices_with_bounded_memory():
    k, stride = 3, 4
    cache = FrameFeatureCache(k, stride)
    assert cache.capacity == stride * (k - 1) + 1
    features = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    for t, f in enumerate(features):
        cache.push(f)
        np.testing.assert_array_equal(cache.context(), features[context_indices(t, k, stride)])
        assert len(cache) <= cache.capacity
    cache.reset()
    with pytest.raises(ValueError):
        cache.context()


class FakeEngine:
    """Encoder = per-frame mean colour; head = concatenated context (counts calls)."""

    def __init__(self, bundle_id: str = "bundle-a") -> None:
        self.bundle_id = bundle_id
        self.preprocess = PreprocessConfig(image_size=8, context_frames=2, context_stride=3)
        self.encoded = 0

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        self.encoded += len(frames)
        return frames.reshape(len(frames), -1, 3).mean(axis=1)[:, :, None, None].astype(np.float32)

    def embed(self, context_features: np.ndarray) -> np.ndarray:
        return context_features.reshape(len(context_features), -1)


def test_process_frame_encodes_each_frame_once_and_uses_the_causal_context():
    engine = FakeEngine()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(20, 8, 8, 3), dtype=np.uint8)
    feats = engine.encode_frames(frames)
    engine.encoded = 0
    offline = engine.embed(feats[context_indices(np.arange(20), 2, 3)])
    refs = ReferenceSet.from_episodes(
        [offline], [np.zeros(20, int)], ["only"], [{}], "bundle-a", ["r0"], FPS
    )
    monitor = ProgressMonitor(refs, engine=engine)
    results = [monitor.process_frame(f) for f in frames]
    assert engine.encoded == 20
    # Each live embedding equals the offline one: its distance to the band is ~0 next to the
    # distance between any two different frames (a wrong context would match no frame).
    pairwise = np.linalg.norm(offline[:, None] - offline[None], axis=-1)
    closest_other = pairwise[~np.eye(20, dtype=bool)].min()
    assert max(r.distance for r in results) < 1e-2 * closest_other
    assert all(r.latency_s > 0 for r in results)
    with pytest.raises(ValueError, match="uint8"):
        monitor.process_frame(frames[0].astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Phase classifier
# ------------------------------------------------------------------------------------------------
def _with_classifier(refs: ReferenceSet, weights: np.ndarray, bias: np.ndarray) -> ReferenceSet:
    return ReferenceSet(**{**refs.__dict__, "phase_weights": weights, "phase_bias": bias})


def test_fitted_phase_classifier_gives_the_phase_and_survives_save_load(path, tmp_path):
    refs = make_references([path, path], [100, 140])
    accuracy = fit_phase_classifier(refs)
    assert accuracy >= 0.9
    width = DIM * (1 + len(DEFAULT_PHASE_LAGS))
    assert refs.phase_weights.shape == (len(PHASES), width) and refs.phase_bias.shape == (4,)
    assert refs.phase_lags == DEFAULT_PHASE_LAGS
    s = warp(120, 1.3)
    results = ProgressMonitor(refs).run(live(path, s))
    assert np.mean([r.phase_id for r in results] == phase_of(s)) >= 0.9
    refs.save(tmp_path)
    loaded = ReferenceSet.load(tmp_path)
    np.testing.assert_array_equal(loaded.phase_weights, refs.phase_weights)
    np.testing.assert_array_equal(loaded.phase_bias, refs.phase_bias)
    assert loaded.phase_lags == refs.phase_lags
    probs = phase_probabilities(loaded, live(path, s)[:61])
    assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0) and (probs > 0).all()


def test_lagged_features_are_differences_to_earlier_frames_padded_at_the_start():
    emb = np.arange(12, dtype=np.float64).reshape(6, 2) ** 2
    out = lagged_features(emb, (1, 4))
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[:, :2], emb)
    np.testing.assert_array_equal(out[1:, 2:4], emb[1:] - emb[:-1])
    np.testing.assert_array_equal(out[4:, 4:], emb[4:] - emb[:-4])
    # Before the first frame the first frame stands in: zero differences at the start.
    np.testing.assert_array_equal(out[0, 2:], 0.0)
    np.testing.assert_array_equal(out[:4, 4:], emb[:4] - emb[0])
    np.testing.assert_array_equal(lagged_features(emb[:2], (5,))[:, 2:], emb[:2] - emb[0])


def test_streamed_classifier_probabilities_equal_the_offline_ones(path):
    refs = make_references([path, path], [100, 140])
    fit_phase_classifier(refs)
    emb = live(path, warp(90, 1.1))
    feats = lagged_features(emb, refs.phase_lags)
    logits = feats @ refs.phase_weights.T + refs.phase_bias
    offline = np.exp(logits - logits.max(1, keepdims=True))
    offline /= offline.sum(1, keepdims=True)
    span = 1 + max(refs.phase_lags)
    for t in (0, 3, span - 1, span, 89):
        # Only the last max(lags) + 1 frames matter, the whole history gives the same answer.
        window = emb[max(0, t + 1 - span) : t + 1]
        np.testing.assert_allclose(phase_probabilities(refs, window), offline[t], rtol=1e-9)
        np.testing.assert_allclose(phase_probabilities(refs, emb[: t + 1]), offline[t], rtol=1e-9)


def test_lagged_classifier_tells_a_motion_from_its_reverse():
    """Carry and bring-back cross the same states in opposite directions: only the embedding's
    differences to earlier frames separate them; the causal monitor sees them too."""
    rng = np.random.default_rng(0)
    names = ["carry", "bring_back"]

    def episode(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        s = np.concatenate([np.linspace(0, 1, n), np.linspace(1, 0, n)])
        emb = np.stack([np.cos(3 * s), np.sin(3 * s), s], 1) + r.normal(scale=0.01, size=(2 * n, 3))
        return emb.astype(np.float32), np.repeat([0, 1], n)

    refs_data = [episode(int(rng.integers(30, 50)), i) for i in range(3)]

    def build() -> ReferenceSet:
        return ReferenceSet.from_episodes(
            [e for e, _ in refs_data],
            [p for _, p in refs_data],
            names,
            [{"bring_back": int(np.argmax(p))} for _, p in refs_data],
            "b",
            [f"r{i}" for i in range(3)],
            FPS,
        )

    static, moving = build(), build()
    fit_phase_classifier(static, lags=())
    fit_phase_classifier(moving, lags=(1, 3))
    emb, truth = episode(40, 99)
    config = MonitorConfig(phase_source="classifier")
    hits = {}
    for name, refs in (("static", static), ("moving", moving)):
        phases = [r.phase_id for r in ProgressMonitor(refs, config).run(emb)]
        hits[name] = float(np.mean(np.array(phases) == truth))
    # Without differences it is a coin toss; with them only frames at the turn are wrong.
    assert hits["moving"] >= 0.9 and hits["static"] <= 0.75, hits


def test_classifier_learns_from_extra_labelled_episodes(path):
    refs = make_references([path], [100])
    more = [
        (live(path, warp(n, p), seed=n), phase_of(warp(n, p))) for n, p in [(80, 0.8), (120, 1.2)]
    ]
    accuracy = fit_phase_classifier(refs, extra_episodes=more)
    assert accuracy >= 0.9
    with pytest.raises(ValueError, match=r"need \[N, 16\]"):
        fit_phase_classifier(refs, extra_episodes=[(np.zeros((5, 3)), np.zeros(5, int))])
    with pytest.raises(ValueError, match="lags must be >= 1"):
        fit_phase_classifier(refs, lags=(0,))


def test_references_saved_without_lags_load_as_a_one_frame_classifier(path, tmp_path):
    refs = make_references([path, path], [100, 140])
    fit_phase_classifier(refs, lags=())
    refs.save(tmp_path)
    with np.load(tmp_path / "references.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "phase_lags"}
    np.savez(tmp_path / "references.npz", **arrays)  # as written before lags existed
    loaded = ReferenceSet.load(tmp_path)
    assert loaded.phase_lags == () and loaded.phase_weights.shape == (4, DIM)
    s = warp(120, 1.1)
    phases = [r.phase_id for r in ProgressMonitor(loaded).run(live(path, s))]
    assert np.mean(np.array(phases) == phase_of(s)) >= 0.9


def test_phase_source_chooses_between_classifier_and_alignment(path):
    refs = make_references([path, path], [100, 140])
    # A classifier that always says "pour": 'auto' and 'classifier' follow it, 'alignment' not.
    rigged = _with_classifier(refs, np.zeros((4, DIM)), np.array([0.0, 0.0, 10.0, 0.0]))
    s = warp(120, 1.0)
    emb = live(path, s)
    for source in ("auto", "classifier"):
        phases = [
            r.phase_id for r in ProgressMonitor(rigged, MonitorConfig(phase_source=source)).run(emb)
        ]
        assert set(phases) == {2}, source
    phases = [
        r.phase_id
        for r in ProgressMonitor(rigged, MonitorConfig(phase_source="alignment")).run(emb)
    ]
    assert np.mean(phases == phase_of(s)) >= 0.9
    with pytest.raises(ValueError, match="no phase classifier"):
        ProgressMonitor(refs, MonitorConfig(phase_source="classifier"))
    with pytest.raises(ValueError, match="phase_source"):
        MonitorConfig(phase_source="votes")


def test_phase_classifier_errors_name_the_problem(path):
    refs = make_references([path], [100])
    with pytest.raises(ValueError, match="does not match 4 phases"):
        _with_classifier(refs, np.zeros((3, DIM)), np.zeros(3))
    with pytest.raises(ValueError, match=r"4 phases x 48 features \(D x 3 for lags \[1, 2\]\)"):
        ReferenceSet(
            **{
                **refs.__dict__,
                "phase_weights": np.zeros((4, DIM)),
                "phase_bias": np.zeros(4),
                "phase_lags": (1, 2),
            }
        )
    with pytest.raises(ValueError, match="go together"):
        _with_classifier(refs, np.zeros((4, DIM)), None)
    no_place = ReferenceSet(**{**refs.__dict__, "phase_ids": [np.minimum(refs.phase_ids[0], 2)]})
    with pytest.raises(ValueError, match="place"):
        fit_phase_classifier(no_place)


def test_calibration_picks_the_more_accurate_phase_source(path):
    refs = make_references([path, path], [100, 140])
    rng = np.random.default_rng(5)
    truths = [warp(int(rng.integers(90, 150)), rng.uniform(0.8, 1.25)) for _ in range(8)]
    episodes = [live(path, s, seed=200 + i) for i, s in enumerate(truths)]
    labels = [phase_of(s) for s in truths]
    # A classifier that always says "pour" loses to the alignment: 'auto' records the alignment.
    rigged = _with_classifier(refs, np.zeros((4, DIM)), np.array([0.0, 0.0, 10.0, 0.0]))
    cal = calibrate(rigged, episodes, 0.05, progress=truths, phase_ids=labels)
    assert cal["phase_source"] == "alignment"
    assert cal["phase_accuracy"]["alignment"] > 0.9 > cal["phase_accuracy"]["classifier"]
    s = warp(120, 1.1)
    phases = [r.phase_id for r in ProgressMonitor(rigged).run(live(path, s))]
    assert np.mean(phases == phase_of(s)) >= 0.9
    # A fitted classifier is only chosen when it is the more accurate source.
    fit_phase_classifier(refs)
    cal = calibrate(refs, episodes, 0.05, progress=truths, phase_ids=labels)
    if cal["phase_source"] == "classifier":
        assert cal["phase_accuracy"]["classifier"] > cal["phase_accuracy"]["alignment"]


def test_phase_source_needs_a_gain_above_its_standard_error():
    alignment = np.full(8, 0.90)
    assert choose_phase_source(alignment + 0.02, alignment) == "classifier"  # steady gain
    # The same mean gain from one lucky episode is noise: keep the alignment.
    lucky = alignment.copy()
    lucky[0] += 0.2
    lucky[1:3] -= 0.01
    assert choose_phase_source(lucky, alignment) == "alignment"
    assert choose_phase_source(alignment - 0.02, alignment) == "alignment"
    assert choose_phase_source([0.9], [0.8]) == "classifier"  # one episode: the better one
    assert choose_phase_source([], []) == "alignment"
