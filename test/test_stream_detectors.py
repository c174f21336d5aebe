"""Anomaly detectors and their calibration on constructed episodes whose answer is known.

An episode is a smooth path in embedding space plus a 16 x 16 "camera" thumbnail: a fixed scene
with a per-episode layout offset and an arm whose look follows the task time. Stalls freeze the
pixels, reversals run the task time backwards, a drop changes part of the scene for good.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from tcc_model.errors import ConfigError
from tcc_model.monitor_metrics import alarm_outcome
from tcc_model.stream import (
    DETECTORS,
    MonitorConfig,
    ProgressMonitor,
    ReferenceSet,
    calibrate,
    thresholds_from_maxima,
)

DIM, PIXELS, FPS = 16, 768, 10.0
PHASES = ["reach", "lift", "pour", "place"]


class Task:
    """Embedding path and thumbnail renderer of one task (fixed seed)."""

    def __init__(self, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.amp = rng.normal(size=(5, DIM)) / np.arange(1, 6)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=(5, DIM))
        self.arm = rng.normal(size=(6, PIXELS)) * 0.08
        self.scene = rng.uniform(0.2, 0.8, size=PIXELS)

    def embed(self, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)[:, None, None]
        clean = np.sum(self.amp * np.sin(np.pi * np.arange(1, 6)[:, None] * s + self.phase), 1)
        return (clean + rng.normal(scale=0.01, size=clean.shape)).astype(np.float32)

    def pixels(self, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        basis = np.sin(np.pi * np.arange(1, 7)[None, :] * np.asarray(s)[:, None])
        layout = rng.normal(scale=0.05, size=PIXELS)  # objects and light differ per episode
        px = self.scene + layout + basis @ self.arm
        return (px + rng.normal(scale=0.002, size=px.shape)).astype(np.float32)


def timeline(rng: np.random.Generator, pause: int = 0) -> np.ndarray:
    """Task time per frame: a random warp, with a natural pause of ``pause`` frames."""
    s = np.linspace(0.0, 1.0, int(rng.integers(90, 130))) ** rng.uniform(0.8, 1.25)
    if pause:
        at = int(rng.integers(20, len(s) - 20))
        s = np.concatenate([s[:at], np.full(pause, s[at]), s[at:]])
    return s


def phase_of(s: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(s) * len(PHASES)).astype(int), len(PHASES) - 1)


def episode(task: Task, s: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return task.embed(s, rng), task.pixels(s, rng)


PAUSES = (0, 0, 3, 5, 6)  # natural pauses of the normal runs (frames)


def calibration_set(task: Task, count: int, seed: int = 100) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    times = [timeline(rng, PAUSES[i % len(PAUSES)]) for i in range(count)]
    pairs = [episode(task, s, seed + 1 + i) for i, s in enumerate(times)]
    return {
        "episodes": [p[0] for p in pairs],
        "pixels": [p[1] for p in pairs],
        "progress": times,
        "phase_ids": [phase_of(s) for s in times],
    }


def references(task: Task) -> ReferenceSet:
    times = [np.linspace(0, 1, 100), np.linspace(0, 1, 130)]
    embs = [task.embed(s, np.random.default_rng(i)) for i, s in enumerate(times)]
    ids = [phase_of(s) for s in times]
    events = [{PHASES[k]: int(np.argmax(p == k)) for k in range(1, len(PHASES))} for p in ids]
    return ReferenceSet.from_episodes(embs, ids, PHASES, events, "b", ["r0", "r1"], FPS)


@pytest.fixture(scope="module")
def task() -> Task:
    return Task()


@pytest.fixture(scope="module")
def calibrated(task: Task) -> ReferenceSet:
    refs = references(task)
    every = MonitorConfig(detectors=tuple(DETECTORS))  # the default set and the optional ones
    calibrate(refs, false_alarm_rate=0.05, config=every, strict=True, **calibration_set(task, 30))
    return refs


def first_alarm(results, detector: str) -> int:
    hits = [r.frame_index for r in results if r.detector == detector]
    return hits[0] if hits else -1


def test_calibration_turns_every_detector_on_and_records_rate_count_and_achieved_rate(
    calibrated,
):
    cal = calibrated.calibration
    states = cal["detector_states"]
    assert set(states) == set(DETECTORS)
    assert all(s["state"] == "on" for s in states.values()), states
    assert cal["false_alarm_rate"] == 0.05 and cal["episodes_needed"] == 19
    assert cal["num_episodes"] + cal["num_excluded"] == 30
    assert 0.0 <= cal["achieved_false_alarm_rate"] <= 0.05
    assert calibrated.profiles is not None and calibrated.profiles.has_pixels


def test_a_frozen_camera_fires_stillness_in_time_whatever_the_progress_does(task, calibrated):
    rng = np.random.default_rng(5)
    s = timeline(rng)
    onset, frozen = 40, 40
    s[onset : onset + frozen] = s[onset]  # the robot stands still: same scene, same features
    emb, px = episode(task, s, seed=6)  # (the encoder's noise stays)
    px[onset : onset + frozen] = px[onset]  # the image stands still
    monitor = ProgressMonitor(calibrated, MonitorConfig(detectors=("stillness",)))
    results = monitor.run(emb, None, px)
    progress = np.array([r.progress for r in results])
    limit, cfg, prof = monitor.thresholds["stillness"], monitor.config, calibrated.profiles
    fired = first_alarm(results, "stillness")
    # documented delay: the lag to see no motion, then threshold / (e - still_drift) frames, e
    # the smallest evidence per frozen frame, whatever progress the filter reports meanwhile
    lag = max(cfg.motion_lag, cfg.direction_lag)
    t = np.arange(onset + lag, onset + frozen)
    b = np.array([prof.bin(p) for p in progress[t]])
    motion = np.sqrt(np.mean((px[t] - px[t - cfg.motion_lag]) ** 2, axis=1))
    speed = np.linalg.norm(emb[t] - emb[t - cfg.direction_lag], axis=1)
    image = np.log((prof.motion[b] + prof.motion_floor) / (motion + prof.motion_floor))
    feature = np.log((prof.speed[b] + prof.speed_floor) / (speed + prof.speed_floor))
    e = float(np.min(cfg.still_pixel_weight * image + (1 - cfg.still_pixel_weight) * feature))
    assert e > cfg.still_drift + 0.5
    latest = onset + lag + math.ceil(limit / (e - cfg.still_drift))
    assert onset < fired <= latest, (fired, latest, limit)
    assert results[fired].anomaly_kind == "stalled" and "little or no motion" in (
        results[fired].anomaly_description
    )
    assert not any(r.anomaly for r in results[:onset])


def test_a_reversed_stretch_fires_the_direction_detector(task, calibrated):
    rng = np.random.default_rng(8)
    s = timeline(rng)
    turn, back = 60, 25
    s = np.concatenate([s[:turn], s[turn : turn - back : -1], s[turn - back :]])
    emb, px = episode(task, s, seed=9)
    results = ProgressMonitor(calibrated).run(emb, None, px)
    fired = [r.frame_index for r in results if r.anomaly_kind == "backwards"]
    assert fired and turn < fired[0] <= turn + 10
    assert results[fired[0]].detector == "direction"
    assert not any(r.anomaly for r in results[:turn])


def test_a_persistent_appearance_change_fires(task, calibrated):
    rng = np.random.default_rng(11)
    s = timeline(rng)
    emb, px = episode(task, s, seed=12)
    onset = 50
    patch = np.zeros(PIXELS, np.float32)
    patch[np.random.default_rng(0).choice(PIXELS, PIXELS // 8, replace=False)] = 0.3
    px[onset:] += patch  # something fell and stays there; the embedding does not notice
    results = ProgressMonitor(calibrated).run(emb, None, px)
    fired = first_alarm(results, "appearance")
    assert onset <= fired <= onset + 6
    assert results[fired].anomaly_kind == "appearance_change"
    assert not any(r.anomaly for r in results[:onset])


def test_normal_pauses_up_to_the_longest_calibrated_pause_do_not_fire(task, calibrated):
    quiet = 0
    for i in range(10):
        rng = np.random.default_rng(200 + i)
        s = timeline(rng, pause=max(PAUSES))
        emb, px = episode(task, s, seed=300 + i)
        results = ProgressMonitor(calibrated).run(emb, None, px)
        quiet += not any(r.anomaly for r in results)
    assert quiet >= 9  # a false-alarm rate of 0.05 allows one in ten at most by chance


def test_switching_a_detector_off_and_streams_without_pixels(task, calibrated):
    from tcc_model.stream import MonitorConfig

    s = timeline(np.random.default_rng(5))
    emb, px = episode(task, s, seed=6)
    px[40:80] = px[40]
    config = MonitorConfig(detectors=("off_trajectory", "direction", "appearance", "phase_skip"))
    monitor = ProgressMonitor(calibrated, config)
    assert first_alarm(monitor.run(emb, None, px), "stillness") == -1
    assert "stillness" not in monitor.detector_states
    monitor = ProgressMonitor(calibrated)
    monitor.run(emb)  # embeddings only: the image detectors cannot see and say so
    states = monitor.detector_states
    assert states["stillness"].startswith("on (threshold")  # from the features' motion alone
    assert states["appearance"].startswith("inactive: no pixels")
    assert states["direction"].startswith("on (threshold")


def test_one_outlier_calibration_episode_is_excluded_and_keeps_every_detector_on(task):
    refs = references(task)
    data = calibration_set(task, 30, seed=400)
    s = np.concatenate(
        [np.linspace(0, 0.6, 60), np.linspace(0.6, 0.1, 40), np.linspace(0.1, 1, 80)]
    )
    emb, px = episode(task, s, seed=999)  # a "normal" run that went far back (a broken demo)
    px[100:160] = px[100]  # ... and froze
    every = MonitorConfig(detectors=tuple(DETECTORS))
    clean = calibrate(copy.copy(refs), false_alarm_rate=0.05, config=every, **data)
    for key in data:
        data[key].insert(7, {"episodes": emb, "pixels": px, "progress": s}.get(key, phase_of(s)))
    cal = calibrate(refs, false_alarm_rate=0.05, config=every, **data)
    assert cal["num_excluded"] == 1 and cal["excluded_episodes"] == [7]
    assert all(v["state"] == "on" for v in cal["detector_states"].values())
    for name, spec in DETECTORS.items():  # the thresholds stay where the normal runs put them
        assert cal[spec.threshold] == pytest.approx(clean[spec.threshold], rel=0.25), name


def test_too_few_episodes_for_the_rate_raise_with_the_number_needed():
    maxima = np.abs(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(ConfigError, match="10 normal episodes .* needs at least 99"):
        thresholds_from_maxima(maxima, ["off_trajectory", "direction"], 0.01, strict=True)
    for method, label in (("tail", "tail_few_episodes"), ("fused", "fused_max_times_margin")):
        loose = thresholds_from_maxima(maxima, ["off_trajectory", "direction"], 0.01, method)
        assert loose["method"] == label and loose["episodes_needed"] == 99


def test_fused_thresholds_have_their_coverage_on_fresh_normal_scores():
    rng = np.random.default_rng(1)
    names = ["off_trajectory", "stillness", "direction"]

    def draw(n: int) -> np.ndarray:
        return np.abs(rng.normal(size=(n, 3))) * [1.0, 2.0, 0.3] + [0.5, 1.0, 0.0]

    misses = []
    for _ in range(200):
        thr = thresholds_from_maxima(draw(39), names, 0.1)["thresholds"]
        fresh = draw(50)
        misses.append(np.mean((fresh > [thr[n] for n in names]).any(axis=1)))
    assert np.mean(misses) <= 0.1 + 0.015  # conformal: at most the rate on average


@pytest.mark.parametrize(
    ("alarm", "onset", "expected"),
    [
        ([0, 0, 1, 1, 0], None, (-1, True)),  # normal episode: any alarm is false
        ([0, 0, 0, 0, 0], None, (-1, False)),
        ([0, 1, 1, 1, 1, 1], 3, (-1, True)),  # raised before the onset and kept: false, missed
        ([0, 1, 0, 0, 1, 1], 3, (1, True)),  # a false alarm, then a catch one frame late
        ([0, 0, 0, 1, 1, 0], 3, (0, False)),
        ([0, 0, 0, 0, 0, 0], 3, (-1, False)),
    ],
)
def test_an_alarm_raised_before_the_onset_is_a_false_alarm(alarm, onset, expected):
    assert alarm_outcome(np.array(alarm, dtype=bool), onset) == expected


def test_bench_stream_counts_a_pre_onset_alarm_as_a_false_alarm():
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_stream.py"
    spec = importlib.util.spec_from_file_location("bench_stream", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class Scripted:
        """A monitor whose alarms are given per episode."""

        def __init__(self, alarms: dict[str, list[int]]) -> None:
            self.alarms = alarms

        def run(self, embeddings, stamps, pixels, statistics=None):
            flags = self.alarms[embeddings]
            return [
                SimpleNamespace(
                    anomaly=bool(f),
                    anomaly_score=2.0 * f,
                    valid=True,
                    detector="x" * f,
                    progress=0.5,
                    phase_id=0,
                )
                for f in flags
            ]

    def ep(name, anomaly=None, onset=-1):
        return SimpleNamespace(
            name=name,
            embeddings=name,
            stamps=None,
            pixels=None,
            anomaly=anomaly,
            onset=onset,
            progress=np.full(6, 0.5),
            phase_ids=np.zeros(6, int),
        )

    monitor = Scripted(
        {
            "n0": [0] * 6,
            "n1": [0] * 6,
            "early": [0, 1, 1, 1, 1, 1],  # raised before the onset (3) and kept
            "late": [0, 0, 0, 0, 1, 1],
        }
    )
    episodes = [ep("n0"), ep("n1"), ep("early", "stall", 3), ep("late", "stall", 3)]
    summary = bench.summarize(bench.replay(monitor, episodes))
    assert summary["pre_onset_false_alarms"] == 1
    assert summary["stall"]["caught"] == 1 and summary["stall"]["median_delay"] == 1.0
    assert summary["false_alarms_per_100_normal"] == 0.0


def _fall_statistic(progress: list[float], config: MonitorConfig) -> list[float]:
    """``progress_backwards`` per frame of the tracker fed ``progress`` at FPS."""
    from tcc_model.stream.config import Thresholds
    from tcc_model.stream.detectors import AnomalyTracker

    tracker = AnomalyTracker(Thresholds({"progress_backwards": 0.2}), config, PHASES)
    out = []
    for i, p in enumerate(progress):
        tracker.update(i, i / FPS, p, 0.0, 1, [], 0.0, 1)
        out.append(tracker.statistics["progress_backwards"])
    return out


def test_a_few_frames_flipped_far_ahead_are_not_a_fall_but_a_real_turn_is():
    config = MonitorConfig(detectors=("progress_backwards",))
    rate = config.backwards_peak_rate / FPS  # the most the peak may rise per frame
    ramp = list(np.linspace(0.0, 0.4, 41))  # 0.01 per frame: a normal run
    flip = ramp + [0.8] * 4 + list(0.4 + 0.01 * np.arange(1, 11))  # estimate flips ahead, back
    fall = _fall_statistic(flip, config)
    assert max(fall) <= 4 * rate + 1e-9  # the flip moved the peak by at most 4 frames' rate
    turn = ramp + list(0.4 - 0.01 * np.arange(1, 21))  # the run really goes backwards
    fell = _fall_statistic(turn, config)
    assert fell[-1] == pytest.approx(0.2, abs=1e-9)  # the whole fall from the real peak
    # followed at full speed (the rate does not bind), the flip would read as a 0.39 fall
    fast = _fall_statistic(flip, MonitorConfig(backwards_peak_rate=100.0))
    assert max(fast) == pytest.approx(0.39, abs=1e-9)


def test_backwards_peak_rate_must_be_positive():
    with pytest.raises(ConfigError, match="backwards_peak_rate"):
        MonitorConfig(backwards_peak_rate=0.0)
