"""bench_stream: per-episode embedding cache, report overwrite guard, timeline of the results."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tcc_model.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


class CountingEngine:
    """Embeds a frame as its mean colour; counts the frames it saw."""

    def __init__(self, bundle_id: str = "b" * 64) -> None:
        self.bundle_id = bundle_id
        self.preprocess = SimpleNamespace(image_size=32, context_frames=1, context_stride=1)
        self.frames_seen = 0

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        self.frames_seen += len(frames)
        return frames.reshape(len(frames), -1, 3).mean(axis=1).astype(np.float32)


def fake_episode(tmp_path: Path, name: str, value: int) -> SimpleNamespace:
    video = tmp_path / f"{name}.mp4"
    video.write_bytes(bytes([value]) * 10)
    frames = np.full((6, 40, 40, 3), value, np.uint8)
    frames[3:] += 10  # the scene changes halfway
    labels = SimpleNamespace(
        anomaly=None, anomaly_mask=None, fps=12.0, key_events={}, phase_id_array=lambda: np.zeros(6)
    )
    return SimpleNamespace(
        name=name,
        split="val",
        video_path=video,
        num_frames=6,
        labels=labels,
        load_frames=lambda: frames.copy(),
    )


def test_the_cache_embeds_each_episode_once_per_bundle_and_again_when_the_video_changes(
    tmp_path,
):
    data = _module("stream_data")
    engine = CountingEngine()
    cache = data.EmbeddingCache(tmp_path / "cache", engine, "onnxruntime")
    ep = fake_episode(tmp_path, "ep1", 50)
    emb, pixels = cache.load(ep)
    assert engine.frames_seen == 6 and emb.shape == (6, 3) and pixels.shape == (6, 768)
    again = data.EmbeddingCache(tmp_path / "cache", engine, "onnxruntime").load(ep)
    assert engine.frames_seen == 6  # a re-run reads the cache
    np.testing.assert_array_equal(again[0], emb)
    np.testing.assert_array_equal(again[1], pixels)
    other = data.EmbeddingCache(tmp_path / "cache", CountingEngine("c" * 64), "onnxruntime")
    other.load(ep)  # another model: embedded again, stored apart
    assert other.engine.frames_seen == 6 and other.path(ep) != cache.path(ep)
    ep.video_path.write_bytes(b"re-rendered")  # the episode changed on disk
    os.utime(ep.video_path, ns=(1, 1))
    cache.load(ep)
    assert engine.frames_seen == 12 and cache.misses == 2 and cache.hits == 0
    cache.path(ep).write_bytes(b"damaged")  # a broken entry is embedded again, not an error
    cache.load(ep)
    assert engine.frames_seen == 18


def test_an_existing_report_is_not_overwritten_without_overwrite(tmp_path):
    bench = _module("bench_stream")
    out = tmp_path / "report.json"
    args = bench.parse_args(["--synthetic", "--out", str(out)])
    assert args.timeline == tmp_path / "report.timeline.png"
    out.write_text("{}")
    with pytest.raises(ConfigError, match=r"report.json exists; pass --overwrite"):
        bench.parse_args(["--synthetic", "--out", str(out)])
    assert bench.parse_args(["--synthetic", "--out", str(out), "--overwrite"]).overwrite


def test_the_replay_draws_each_episode_timeline_from_the_monitor_results(tmp_path):
    bench = _module("bench_stream")
    from tcc_model.visualize.timeline import plot_timeline_overview

    class Scripted:
        references = SimpleNamespace(phase_names=["a", "b"])
        fps = 10.0

        def run(self, embeddings, stamps, pixels, statistics=None):
            return [
                SimpleNamespace(
                    anomaly=i >= 4,
                    anomaly_score=0.3 * i,
                    valid=True,
                    detector="stillness" if i >= 4 else "",
                    progress=i / 5,
                    phase_id=int(i >= 3),
                )
                for i in range(6)
            ]

    ep = SimpleNamespace(
        name="val/e",
        embeddings=None,
        stamps=None,
        pixels=None,
        anomaly="stall",
        onset=3,
        progress=np.linspace(0, 1, 6),
        phase_ids=np.repeat([0, 1], 3),
        fps=10.0,
    )
    timelines: list = []
    records = bench.replay(Scripted(), [ep], timelines)
    assert records[0]["delay"] == 1 and records[0]["detector"] == "stillness"
    (tl,) = timelines
    np.testing.assert_array_equal(tl.alarm, [False] * 4 + [True] * 2)
    np.testing.assert_array_equal(tl.anomaly_mask, np.arange(6) >= 3)
    assert "stall" in tl.name
    assert plot_timeline_overview(timelines, tmp_path / "t.png").stat().st_size > 0


def test_the_synthetic_benchmark_runs_end_to_end_and_writes_its_report(tmp_path, capsys):
    import json

    bench = _module("bench_stream")
    out = tmp_path / "r.json"
    argv = ["--synthetic", "--calib-episodes", "30", "--normal-episodes", "4"]
    argv += ["--anomaly-episodes", "1", "--false-alarm-rate", "0.1", "--dim", "16"]
    assert bench.main([*argv, "--methods", "shipped", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["results"]["shipped"]
    assert row["calibration"]["achieved_false_alarm_rate"] <= 0.1
    assert len(row["records"]) == 4 + 4  # 4 normal + one episode per anomaly type
    printed = capsys.readouterr().out
    assert "shipped: calibration tail on 29 episodes (1 excluded" in printed
    # thresholds chosen on the test episodes themselves catch at least what the calibrated ones
    # did at the same number of false alarms
    false_alarms = sum(r["false_alarm"] for r in row["records"] if r["anomaly"] is None)
    assert false_alarms <= 2
    assert row["ceiling"]["detectors"][str(false_alarms)] >= row["all"]["caught"]
    assert row["ceiling"]["all_statistics"]["0"] >= row["ceiling"]["detectors"]["0"]
    assert "ceiling (thresholds chosen on these test episodes themselves" in printed


def _record(anomaly, **maxima):
    return {"anomaly": anomaly, "maxima": maxima}


def test_the_fresh_normal_ceiling_sets_thresholds_on_the_fresh_normals_at_the_rate(tmp_path):
    bench = _module("bench_stream")
    # 200 fresh normals: statistic a up to 1.0, except two normal runs at 5 and 9
    fresh = [_record(None, a=0.005 * i) for i in range(198)]
    fresh += [_record(None, a=5.0), _record(None, a=9.0)]
    # test anomalies at 2, 6 and 10 on a; the test's own normal run at 5.5 must not count
    tests = [_record(None, a=5.5)] + [_record("drop", a=v) for v in (2.0, 6.0, 10.0)]
    at_1pct = bench.fresh_ceiling(tests, fresh, 0.01, ["a"])
    # 1% of 200: two fresh normals may alarm, so a's threshold drops to 1.0: 3 caught on a
    assert at_1pct["allowed_false_alarms"] == 2 and at_1pct["detectors"] == 3
    assert bench.fresh_ceiling(tests, fresh, 0.005, ["a"])["detectors"] == 2  # one may alarm
    assert bench.fresh_ceiling(tests, fresh, 0.001, ["a"])["detectors"] == 1  # none may


def test_a_fresh_normal_report_from_another_calibration_is_refused(tmp_path):
    bench = _module("bench_stream")
    fresh = [_record(None, a=0.1), _record(None, a=0.2)]
    report = tmp_path / "fresh.json"
    shipped = {"records": fresh, "thresholds": {"a": 1.0}}
    report.write_text(bench.json.dumps({"results": {"shipped": shipped}}))
    loaded = bench.load_fresh_normals(report)
    assert loaded["shipped"]["records"] == fresh
    args = SimpleNamespace(fresh_normals=report, false_alarm_rate=0.01)
    rows = {"shipped": {"records": [_record("drop", a=3.0)], "thresholds": {"a": 1.0}}}
    rows["shipped"]["ceiling"] = {}
    bench.add_fresh_ceilings(rows, loaded, args)
    assert rows["shipped"]["ceiling"]["fresh_normals"]["detectors"] == 1
    rows["shipped"]["thresholds"] = {"a": 1.1}  # calibrated on other episodes or at another rate
    with pytest.raises(ConfigError, match="fresh.json: method shipped was calibrated differently"):
        bench.add_fresh_ceilings(rows, loaded, args)
    report.write_text('{"results": {"shipped": {}}}')
    with pytest.raises(ConfigError, match="fresh.json: not a bench_stream --out report"):
        bench.load_fresh_normals(report)
