"""Bag round trips, episode splitting, tau from bags, and clear errors on bad bags."""

from __future__ import annotations

from pathlib import Path

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


def test_report_json_is_strict() -> None:
    import json

    from tcc_ros.evaluate_bag import to_strict_json

    text = to_strict_json({"tau": float("nan"), "x": [np.float32(0.5), float("inf")], "n": 2})
    assert json.loads(text) == {"tau": None, "x": [0.5, None], "n": 2}
