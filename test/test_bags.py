"""Bag round trips, episode splitting, tau from bags, and clear errors on bad bags."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags")

from tcc_model.data.format import EpisodeLabels  # noqa: E402
from tcc_model.evaluation import kendalls_tau  # noqa: E402
from tcc_ros.bag_io import BagError, BagWriter, iter_episode_slices, read_bag  # noqa: E402
from tcc_ros.evaluate_bag import load_episodes  # noqa: E402
from tcc_ros.ground_truth import ground_truth_fields  # noqa: E402

PHASES = ["a", "b", "c"]


def _episode(rng: np.random.Generator, n: int, anomaly: str | None = None):
    frames = rng.integers(0, 256, size=(n, 16, 20, 3), dtype=np.uint8)
    phase_ids = np.repeat([0, 1, 2], [n // 3, n // 3, n - 2 * (n // 3)]).tolist()
    mask = [0] * n if anomaly is None else [0] * (n // 2) + [1] * (n - n // 2)
    labels = EpisodeLabels(
        video="x.mp4",
        fps=10.0,
        num_frames=n,
        phase_names=PHASES,
        phase_ids=phase_ids,
        key_events={"b": n // 3, "c": 2 * (n // 3)},
        anomaly=anomaly,
        anomaly_mask=None if anomaly is None else mask,
        metadata={},
    )
    return frames, labels


def _write(path: Path, episodes, storage: str, gap_ns: int = 2_000_000_000) -> None:
    stamp = 1_000_000_000
    with BagWriter(path, storage=storage) as writer:
        for name, (frames, labels) in episodes.items():
            writer.write_marker(stamp, name)
            for frame, truth in zip(frames, ground_truth_fields(labels, name)):
                writer.write_frame(stamp, frame, truth)
                stamp += 100_000_000
            stamp += gap_ns


class PixelEngine:
    """Deterministic stand-in embedder: per-frame mean colour of 4 image quadrants."""

    bundle_id = "test"
    backend = "numpy"
    preprocess = SimpleNamespace(image_size=16)  # frames the monitor's image detectors see

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        f = frames.astype(np.float32)
        h, w = f.shape[1] // 2, f.shape[2] // 2
        quads = [f[:, :h, :w], f[:, :h, w:], f[:, h:, :w], f[:, h:, w:]]
        return np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_is_pixel_exact_with_ground_truth(tmp_path: Path, storage: str) -> None:
    rng = np.random.default_rng(0)
    episodes = {"ep0": _episode(rng, 9), "ep1": _episode(rng, 12, anomaly="drop")}
    bag = tmp_path / "bag"
    _write(bag, episodes, storage)
    contents = read_bag(bag)
    frames = np.stack([im.frame for im in contents.images])
    expected = np.concatenate([f for f, _ in episodes.values()])
    np.testing.assert_array_equal(frames, expected)
    assert [name for _, name in contents.markers] == ["ep0", "ep1"]
    truth = [contents.ground_truth[im.stamp_ns] for im in contents.images]
    expected_phases = episodes["ep0"][1].phase_ids + episodes["ep1"][1].phase_ids
    assert [t.phase_id for t in truth] == expected_phases
    assert [t.anomaly_kind for t in truth[-12:]] == ["drop"] * 12
    assert truth[0].progress == 0.0 and truth[8].progress == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["marker-topic", "gap"])
def test_episode_splitting(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    episodes = {f"ep{i}": _episode(rng, 6 + i) for i in range(3)}
    bag = tmp_path / "bag"
    _write(bag, episodes, "mcap")
    slices = list(iter_episode_slices(read_bag(bag), mode, gap_s=1.0))
    assert [s.stop - s.start for _, s in slices] == [6, 7, 8]
    if mode == "marker-topic":
        assert [name for name, _ in slices] == ["ep0", "ep1", "ep2"]


def test_tau_from_bag_equals_tau_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    # Smoothly varying frames so that the embedding order carries time.
    episodes = {}
    for i in range(3):
        n = 20 + 3 * i
        t = np.linspace(0, 1, n)[:, None, None, None]
        base = rng.integers(0, 60, size=(1, 16, 20, 3))
        frames = np.clip(base + 190 * t * np.linspace(0.2, 1, 3), 0, 255).astype(np.uint8)
        episodes[f"ep{i}"] = (frames, _episode(rng, n)[1])
    bag_a, bag_b = tmp_path / "a", tmp_path / "b"
    _write(bag_a, dict(list(episodes.items())[:2]), "mcap")
    _write(bag_b, dict(list(episodes.items())[2:]), "sqlite3")
    engine = PixelEngine()
    loaded, counters = load_episodes(
        [bag_a, bag_b], engine, "/camera/image_raw", "marker-topic", 1.0
    )
    assert counters["frames"] == sum(len(f) for f, _ in episodes.values())
    tau_bag = kendalls_tau([e.embeddings for e in loaded], stride=1)
    tau_mem = kendalls_tau([engine.embed_frames(f) for f, _ in episodes.values()], stride=1)
    assert tau_bag == pytest.approx(tau_mem, abs=1e-12)
    assert tau_mem > 0.9
    # the image detectors get the thumbnails the live node would compute from the same frames
    from tcc_model.stream import thumbnails

    for ep, (frames, _) in zip(loaded, episodes.values()):
        assert ep.pixels is not None
        np.testing.assert_array_equal(ep.pixels, thumbnails(frames, 16))


def test_missing_topic_names_the_topic(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    _write(bag, {"ep0": _episode(np.random.default_rng(3), 4)}, "mcap")
    with pytest.raises(BagError, match="/camera/other"):
        read_bag(bag, "/camera/other")


def test_wrong_message_type_is_rejected(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    _write(bag, {"ep0": _episode(np.random.default_rng(4), 4)}, "mcap")
    with pytest.raises(BagError, match="expected sensor_msgs/msg/Image"):
        read_bag(bag, "/tcc/ground_truth")


def test_empty_bag_is_rejected(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    with BagWriter(bag, storage="mcap"):
        pass
    with pytest.raises(BagError, match="no decodable frames"):
        read_bag(bag)


def test_corrupt_and_missing_bags_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="not found"):
        read_bag(tmp_path / "nope")
    bag = tmp_path / "bag"
    _write(bag, {"ep0": _episode(np.random.default_rng(5), 6)}, "mcap")
    data_file = next(bag.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[:200])
    with pytest.raises(BagError, match=str(bag.name)):
        read_bag(bag)


def test_writer_refuses_to_overwrite(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    bag.mkdir()
    with pytest.raises(BagError, match="exists"):
        BagWriter(bag)


def test_camera_source_replays_bag_episodes_with_their_ground_truth(tmp_path: Path) -> None:
    from tcc_ros.camera_source import bag_episode

    rng = np.random.default_rng(6)
    episodes = {"ep0": _episode(rng, 6), "ep1": _episode(rng, 9, anomaly="stall")}
    bag = tmp_path / "bag"
    _write(bag, episodes, "sqlite3")
    replayed = list(bag_episode(str(bag), "/camera/image_raw", None))
    assert [e.name for e in replayed] == ["ep0", "ep1"]
    for source, (frames, labels) in zip(replayed, episodes.values()):
        np.testing.assert_array_equal(source.frames, frames)
        expected = ground_truth_fields(labels, source.name)
        assert [t["phase_id"] for t in source.truth] == [t["phase_id"] for t in expected]
        assert [t["anomaly"] for t in source.truth] == [t["anomaly"] for t in expected]
        np.testing.assert_allclose(
            [t["progress"] for t in source.truth], [t["progress"] for t in expected], atol=1e-6
        )
    assert replayed[1].anomaly_kind == "stall" and replayed[0].anomaly_kind == ""
    with pytest.raises(BagError, match="/camera/other"):
        list(bag_episode(str(bag), "/camera/other", None))


def test_auto_split_uses_episode_markers_when_the_bag_has_them(tmp_path: Path) -> None:
    from tcc_ros.evaluate_bag import build_parser

    rng = np.random.default_rng(7)
    marked = tmp_path / "marked"
    _write(marked, {"ep0": _episode(rng, 6), "ep1": _episode(rng, 7)}, "mcap")
    plain = tmp_path / "plain"
    with BagWriter(plain, storage="mcap") as writer:  # frames only, no /tcc/episode markers
        for i, frame in enumerate(_episode(rng, 5)[0]):
            writer.write_frame(1_000_000_000 + i * 100_000_000, frame)
    assert build_parser().parse_args(["b", "--bundle", "x"]).episodes == "auto"
    loaded, _ = load_episodes([marked, plain], PixelEngine(), "/camera/image_raw", "auto", 1.0)
    assert [(e.name, len(e.stamps_ns)) for e in loaded] == [("ep0", 6), ("ep1", 7), ("plain", 5)]


def _record_args(tmp_path: Path, out: Path) -> list[str]:
    """record_sim_bag arguments that take 2 episodes from a small dataset folder."""
    from tcc_model.data.format import write_episode

    rng = np.random.default_rng(8)
    for i in range(2):
        frames, labels = _episode(rng, 6 + i)
        frames = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # 32x40, even for H.264
        labels.video = f"ep{i}.mp4"
        write_episode(tmp_path / "data" / "test", f"ep{i}", frames, labels)
    return ["--out", str(out), "--dataset", f"folder:{tmp_path / 'data'}", "--episodes", "2"]


def test_record_sim_bag_leaves_no_partial_file_inside(tmp_path: Path, capsys) -> None:
    from tcc_model.cli import run_main
    from tcc_ros.record_sim_bag import main

    out = tmp_path / "sim.bag"
    assert run_main(main, _record_args(tmp_path, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "sim.bag.mcap"]
    assert not [p for p in tmp_path.rglob("*partial*")]
    contents = read_bag(out)
    assert [name for _, name in contents.markers] == ["ep0", "ep1"] and len(contents.images) == 13
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote: bag {out} (13 frames)"
    assert run_main(main, _record_args(tmp_path, out)) == 2  # never overwritten
    assert "exists; choose a new --out" in capsys.readouterr().err


def _fake_bundle(tmp_path: Path, episodes: dict) -> Path:
    """A bundle folder with references embedded by PixelEngine (no ONNX: the engine is faked)."""
    from tcc_model.stream import ReferenceSet

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("format_version: 1\n")
    engine = PixelEngine()
    refs = ReferenceSet.from_episodes(
        [engine.embed_frames(f) for f, _ in episodes.values()],
        [lab.phase_ids for _, lab in episodes.values()],
        PHASES,
        [lab.key_events for _, lab in episodes.values()],
        bundle_id=engine.bundle_id,
        reference_ids=list(episodes),
        fps=10.0,
    )
    refs.calibration = {"temperature": 20.0, "distance_threshold": 1e4, "stall_seconds": 30.0,
                        "backwards_threshold": 0.9, "skip_threshold": 1.0}  # fmt: skip
    refs.save(bundle)
    return bundle


def _evaluate_bag_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    import tcc_model.engine

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: PixelEngine())
    rng = np.random.default_rng(9)
    episodes = {"ep0": _episode(rng, 12), "ep1": _episode(rng, 15, anomaly="drop")}
    bag = tmp_path / "sim.bag"
    _write(bag, episodes, "mcap")
    return bag, _fake_bundle(tmp_path, episodes)


def test_evaluate_bag_reports_per_episode_with_monitor_settings_from_the_params_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import json

    from tcc_model.cli import run_main
    from tcc_ros.evaluate_bag import main

    bag, bundle = _evaluate_bag_setup(tmp_path, monkeypatch)
    params = tmp_path / "params.yaml"
    params.write_text("/**/progress_monitor:\n  ros__parameters:\n    monitor:\n      window: 48\n")
    out = tmp_path / "eval"
    args = [str(bag), "--bundle", str(bundle), "--params", str(params), "--out", str(out)]
    assert run_main(main, args) == 0
    report = json.loads((out / "bag_eval.json").read_text())
    assert [e["name"] for e in report["episodes"]] == ["ep0", "ep1"]
    assert report["config"]["episodes"] == "auto (marker-topic)"
    assert report["kendalls_tau"] is not None
    assert report["monitor_config"]["window"] == 48  # from the params file
    assert report["monitor_config"]["skip_threshold"] == 1.0  # from the bundle's calibration
    plots = ["progress_curves.png", "phase_confusion.png", "timelines/ep0.png", "timelines/ep1.png"]
    assert report["plots"] == plots  # the same pictures, in the same order, as the live report
    for name in plots:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"wrote: report {out}")
    params.write_text("/**/progress_monitor:\n  ros__parameters:\n    monitor:\n      window: 2\n")
    assert run_main(main, args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "window" in err and "Traceback" not in err
    params.write_text("/**/progress_monitor:\n  ros__parameters:\n    monitor: {}\n")
    assert run_main(main, [*args, "--set", "windw=9"]) == 2
    assert "unknown monitor setting 'windw'" in capsys.readouterr().err


def test_evaluate_bag_tells_a_checkpoint_from_a_bundle(tmp_path: Path, capsys) -> None:
    from tcc_model.cli import run_main
    from tcc_ros.evaluate_bag import main

    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"x")
    assert run_main(main, [str(tmp_path), "--bundle", str(ckpt)]) == 2
    assert "is a file, not a bundle folder" in capsys.readouterr().err
