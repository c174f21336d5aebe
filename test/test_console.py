"""The console's live report: episode timelines and the pictures written beside the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tcc_ros.console import LiveReport, parse_args, write_report

PHASES = ["approach", "pour", "withdraw"]


def _report_with_two_episodes() -> LiveReport:
    """Episode ``a`` normal (6 frames, frame 2 never estimated), episode ``b`` anomalous from
    frame 3 and flagged at frame 4, then ``b`` replayed (a looping camera)."""
    r = LiveReport(phase_names=list(PHASES), threshold=1.5)
    stamp = 0
    for name, frames, onset, alarm_at in (("a", 6, None, None), ("b", 6, 3, 4), ("b", 5, 3, None)):
        for f in range(frames):
            stamp += 1
            anomalous = onset is not None and f >= onset
            r.add_truth(
                stamp,
                name,
                f,
                min(f // 2, 2),
                f / (frames - 1),
                anomalous,
                "drop" * (onset is not None),
            )
            if name == "a" and f == 2:
                continue  # the monitor dropped this frame
            r.add_progress(stamp, f / (frames - 1) + 0.05)
            r.add_phase(stamp, min(f // 2, 2), stamp)
            r.add_anomaly(stamp, f == alarm_at, 2.0 if f == alarm_at else 0.3)
    return r


def test_timelines_follow_the_episodes_with_truth_threshold_and_alarms() -> None:
    timelines = _report_with_two_episodes().timelines()
    assert [tl.name for tl in timelines] == ["a", "b", "b (run 2)"]
    a, b, replay = timelines
    assert math.isnan(a.progress[2]) and a.phase[2] == -1  # the dropped frame stays a gap
    np.testing.assert_allclose(a.progress[[0, 5]], [0.05, 1.05])
    np.testing.assert_allclose(a.true_progress, np.linspace(0, 1, 6))
    assert list(a.true_phase) == [0, 0, 1, 1, 2, 2] and list(a.phase_names) == PHASES
    assert a.onset == -1 and not a.alarm.any()
    assert b.onset == 3 and list(np.flatnonzero(b.alarm)) == [4]
    assert b.threshold == 1.5 and b.score[4] == 2.0
    assert replay.progress.size == 5 and not replay.alarm.any()


def test_write_report_draws_the_run_beside_the_json(tmp_path: Path, capsys) -> None:
    live = _report_with_two_episodes()
    report = live.report()
    path = tmp_path / "live" / "report.json"
    path.parent.mkdir()
    written = write_report(report, live.timelines(), path, max_timelines=2)
    expected = ["progress_curves.png", "phase_confusion.png", "timelines/a.png", "timelines/b.png"]
    assert written["plots"] == expected  # at most 2 timelines; the overview shows all 3
    assert written["timelines_not_drawn"] == 0
    for name in expected:
        assert (path.parent / name).stat().st_size > 10_000, name
    on_disk = json.loads(path.read_text())  # strict JSON: NaN became null
    assert on_disk["plots"] == expected and on_disk["episodes"] == 3
    assert on_disk["detection_delay_frames_median"] == 1.0
    assert on_disk["input_rate_hz"] is None
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote: report {path}") and "timelines/a.png" in line


def test_unlabelled_ground_truth_gives_no_phase_rows_or_confusion(tmp_path: Path) -> None:
    r = LiveReport()
    for f in range(4):
        r.add_truth(f, "clip", f, -1, f / 3, False, "")
        r.add_progress(f, f / 3)
        r.add_phase(f, 0, f)
    (tl,) = r.timelines()
    assert tl.true_phase is None
    written = write_report(r.report(), [tl], tmp_path / "report.json")
    assert "phase_confusion.png" not in written["plots"]


def test_max_timelines_must_not_be_negative() -> None:
    assert parse_args(["--report", "r.json", "--max-timelines", "0"]).max_timelines == 0
    with pytest.raises(SystemExit):
        parse_args(["--max-timelines", "-1"])


def test_without_matplotlib_the_report_is_still_written(tmp_path: Path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    live = _report_with_two_episodes()
    path = tmp_path / "report.json"
    written = write_report(live.report(), live.timelines(), path)
    assert written["plots"] == [] and json.loads(path.read_text())["episodes"] == 3
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "timelines").exists()


def test_drawing_time_is_bounded_overview_and_confusion_first(tmp_path: Path) -> None:
    live = _report_with_two_episodes()
    written = write_report(live.report(), live.timelines(), tmp_path / "r.json", seconds=0.0)
    assert written["plots"] == ["progress_curves.png", "phase_confusion.png"]
    assert written["timelines_not_drawn"] == 3
    assert json.loads((tmp_path / "r.json").read_text())["timelines_not_drawn"] == 3
