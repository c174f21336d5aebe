"""Changing a running monitor's settings (``update_settings``): next frame on, all or nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_stream_detectors import FPS, Task, calibration_set, episode, references, timeline

from tcc_model.errors import ConfigError
from tcc_model.stream import RUNTIME_SETTINGS, MonitorConfig, ProgressMonitor, calibrate


@pytest.fixture(scope="module")
def calibrated():
    task = Task()
    refs = references(task)
    calibrate(refs, false_alarm_rate=0.05, strict=True, **calibration_set(task, 30))
    return task, refs


def stalled_episode(task: Task) -> tuple[np.ndarray, np.ndarray]:
    emb, px = episode(task, timeline(np.random.default_rng(5)), seed=6)
    px[40:80] = px[40]  # the camera freezes for 4 s
    return emb, px


def test_a_threshold_change_applies_from_the_next_frame_and_keeps_the_episode(calibrated):
    task, refs = calibrated
    emb, px = stalled_episode(task)
    monitor = ProgressMonitor(refs)
    monitor.reset()
    results = [monitor.process_embedding(emb[i], None, px[i]) for i in range(44)]
    still = monitor.statistics["stillness"]  # 4 frames into the freeze: below the limit
    assert 0.0 < still < monitor.thresholds["stillness"] and not any(r.anomaly for r in results)
    config = monitor.update_settings(still_threshold=str(still / 2), detectors=["stillness"])
    assert config.still_threshold == still / 2 and config.detectors == ("stillness",)
    assert monitor.config is config and monitor.thresholds["stillness"] == still / 2
    result = monitor.process_embedding(emb[44], None, px[44])
    # the clock started at the freeze, not at the update: it fires on the very next frame
    assert result.anomaly and result.detector == "stillness"
    assert list(monitor.detector_states) == ["stillness"]
    monitor.update_settings(still_threshold=None)  # back to the calibrated value
    assert monitor.thresholds["stillness"] == refs.calibration["still_threshold"]
    monitor.update_settings(still_threshold=math.inf)  # off by the caller's choice
    assert not monitor.process_embedding(emb[61], None, px[61]).anomaly


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"window": 32}, "window cannot change while running"),
        ({"no_such_setting": 1}, "unknown monitor setting 'no_such_setting'"),
        ({"still_threshold": "soon"}, "still_threshold='soon': expected"),
        ({"appearance_m": 9}, "appearance_m <= appearance_n"),
        ({"detectors": "stillness, sonar"}, "unknown ['sonar']"),
        ({"temperature": -1.0}, "temperature must be > 0"),
    ],
)
def test_a_bad_update_raises_and_changes_nothing(calibrated, overrides, message):
    _, refs = calibrated
    monitor = ProgressMonitor(refs)
    before, thresholds, temperature = monitor.config, monitor.thresholds, monitor.temperature
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        monitor.update_settings(**{"still_drift": 0.1, **overrides})
    assert monitor.config is before and monitor.thresholds is thresholds
    assert monitor.temperature == temperature


def test_window_sizes_and_temperature_change_without_losing_the_recent_frames(calibrated):
    task, refs = calibrated
    emb, px = stalled_episode(task)
    monitor = ProgressMonitor(refs)
    reference = ProgressMonitor(refs, MonitorConfig(appearance_n=8, appearance_m=2))
    monitor.reset()
    reference.reset()
    for i in range(30):
        monitor.process_embedding(emb[i], None, px[i])
        reference.process_embedding(emb[i], None, px[i])
    monitor.update_settings(appearance_n=8, appearance_m=2)
    for i in range(30, 40):
        a = monitor.process_embedding(emb[i], None, px[i])
        b = reference.process_embedding(emb[i], None, px[i])
    # the shorter window held the last 5 values; after 10 more frames both windows agree
    assert a.anomaly_score == pytest.approx(b.anomaly_score)
    monitor.update_settings(temperature=2 * monitor.temperature)
    assert monitor._inv_two_tau2 == pytest.approx(0.5 / monitor.temperature**2)


def test_every_runtime_setting_is_a_monitor_config_field():
    fields = MonitorConfig.__dataclass_fields__
    assert set(RUNTIME_SETTINGS) <= set(fields)
    assert not {"window", "transition", "fps", "phase_source", "motion_lag"} & set(RUNTIME_SETTINGS)
    assert FPS > 0
