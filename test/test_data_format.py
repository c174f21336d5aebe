"""Dataset format: label/video round trips, progress, loading, the validator, TFRecord import."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from tcc_model.data.check import check_dataset
from tcc_model.data.check import main as check_main
from tcc_model.data.format import (
    DatasetError,
    EpisodeLabels,
    key_events_from_phase_ids,
    load_split,
    progress_from_key_events,
    read_manifest,
    read_video,
    write_episode,
    write_manifest,
    write_video,
)
from tcc_model.data.tfrecord import (
    crc32c,
    iter_tfrecord,
    masked_crc32c,
    parse_feature,
    parse_sequence_example,
)
from tcc_model.data.tfrecord import main as tfrecord_main

PHASES = ["reach", "pour", "retract"]


def make_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth frames whose brightness encodes the frame index (survives lossy coding)."""
    levels = np.linspace(20, 235, n).astype(np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[:] = levels[:, None, None, None]
    frames[..., 1] //= 2  # not grey: catches channel order mistakes
    return frames


def make_labels(n: int) -> EpisodeLabels:
    ids = [0] * (n // 3) + [1] * (n // 3) + [2] * (n - 2 * (n // 3))
    return EpisodeLabels(
        video="x.mp4",
        fps=12.0,
        num_frames=n,
        phase_names=list(PHASES),
        phase_ids=ids,
        key_events=key_events_from_phase_ids(ids, PHASES),
        anomaly=None,
        anomaly_mask=[0] * n,
        metadata={"seed": 3, "nested": {"a": [1.5, 2]}},
    )


def make_dataset(root: Path, counts: dict[str, int], n: int = 12, fmt: str = "png") -> None:
    for split, count in counts.items():
        for i in range(count):
            write_episode(root / split, f"ep{i:03d}", make_frames(n), make_labels(n), fmt)
    write_manifest(root, {"name": "tiny", "phase_names": PHASES, "splits": counts})


def test_labels_json_round_trip() -> None:
    labels = make_labels(10)
    again = EpisodeLabels.from_json(labels.to_json())
    assert again == labels
    assert list(again.key_events) == ["pour", "retract"]
    assert again.validate() == []


def test_label_json_is_strict_with_numpy_and_nan_metadata() -> None:
    labels = make_labels(6)
    labels.metadata = {"flow": np.float32("nan"), "ids": np.arange(2), "ok": np.bool_(True)}

    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(labels.to_json(), parse_constant=reject)
    assert data["metadata"] == {"flow": None, "ids": [0, 1], "ok": True}


def test_binary_label_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ep.json"
    path.write_bytes(b"\xc5\x00\xff garbage")
    with pytest.raises(DatasetError, match="ep.json: not a UTF-8 text file"):
        EpisodeLabels.load(path)


def test_unlabelled_labels_round_trip() -> None:
    labels = EpisodeLabels(video="v", fps=30.0, num_frames=5)
    again = EpisodeLabels.from_json(labels.to_json())
    assert again.phase_ids is None and not again.has_phase_labels
    assert again.phase_id_array().tolist() == [-1] * 5
    assert again.validate() == []


def test_truncated_json_names_source() -> None:
    text = make_labels(10).to_json()
    with pytest.raises(DatasetError, match="ep7.json.*truncated"):
        EpisodeLabels.from_json(text[: len(text) // 2], source="ep7.json")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"phase_ids": [0] * 9}, "phase_ids has 9 entries"),
        ({"phase_ids": [0] * 9 + [7]}, "unknown phase id"),
        ({"key_events": {"pour": 10}}, "key event 'pour'"),
        ({"anomaly_mask": [0] * 3}, "anomaly_mask has 3"),
        ({"fps": 0.0}, "fps"),
        ({"video": "../x.mp4"}, "video must be"),
    ],
)
def test_validate_finds_problem(change: dict, expected: str) -> None:
    data = {**make_labels(10).to_dict(), **change}
    problems = EpisodeLabels.from_dict(data).validate()
    assert any(expected in p for p in problems), problems


def test_key_events_from_phase_ids_skips_missing_phase() -> None:
    events = key_events_from_phase_ids([0, 0, 2, 2, 3], ["a", "b", "c", "d"])
    assert events == {"c": 2, "d": 4}


def test_progress_piecewise_linear() -> None:
    progress = progress_from_key_events(11, [2, 6])
    assert progress[0] == 0.0 and progress[-1] == 1.0
    # key events sit at 1/3 and 2/3, linear in between
    assert progress[2] == pytest.approx(1 / 3) and progress[6] == pytest.approx(2 / 3)
    assert progress[1] == pytest.approx(1 / 6) and progress[8] == pytest.approx(2 / 3 + 1 / 6)
    assert np.all(np.diff(progress) >= 0)
    assert progress_from_key_events(5, {}).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])


def test_progress_rejects_bad_events() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        progress_from_key_events(10, [5, 3])
    with pytest.raises(ValueError, match="0..9"):
        progress_from_key_events(10, [12])


def test_video_round_trip_and_determinism(tmp_path: Path) -> None:
    frames = make_frames(17)
    write_video(tmp_path / "a.mp4", frames, fps=12.0)
    write_video(tmp_path / "b.mp4", frames, fps=12.0)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    decoded = read_video(tmp_path / "a.mp4")
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).max() <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # no temp files


def test_write_video_rejects_odd_size(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="even"):
        write_video(tmp_path / "a.mp4", make_frames(3, 31, 32), fps=10)


def test_read_video_errors_name_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01not a video at all" * 10)
    with pytest.raises(DatasetError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(DatasetError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_episode_png_round_trip_is_lossless(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
    labels = make_labels(6)
    path = write_episode(tmp_path / "train", "ep", frames, labels, video_format="png")
    (episode,) = load_split(tmp_path, "train")
    assert episode.label_path == path and episode.labels.video == "ep"
    np.testing.assert_array_equal(episode.load_frames(), frames)


def test_write_episode_mp4_and_load_split_sorted(tmp_path: Path) -> None:
    for name in ["b", "a", "c"]:
        write_episode(tmp_path / "val", name, make_frames(9), make_labels(9))
    episodes = load_split(tmp_path, "val")
    assert [e.name for e in episodes] == ["a", "b", "c"]
    assert episodes[0].video_path == tmp_path / "val" / "a.mp4"
    assert episodes[0].load_frames().shape == (9, 32, 48, 3)


def test_write_episode_rejects_invalid_labels(tmp_path: Path) -> None:
    labels = make_labels(9)
    with pytest.raises(DatasetError, match="phase_ids has 9 entries but num_frames is 5"):
        write_episode(tmp_path, "ep", make_frames(5), labels)
    assert not list(tmp_path.iterdir())


def test_load_split_missing_split_lists_available(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"train": 1})
    with pytest.raises(DatasetError, match=r"'test' not found.*\['train'\]"):
        load_split(tmp_path, "test")


def test_manifest_round_trip(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"name": "x", "phase_names": PHASES, "splits": {"train": 2}})
    manifest = read_manifest(tmp_path)
    assert manifest["format_version"] == 1 and manifest["splits"] == {"train": 2}
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path / "nope")


# --------------------------------------------------------------------------- validator


def test_check_clean_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_dataset(tmp_path, {"train": 2, "val": 1}, fmt="mp4")
    assert check_main([str(tmp_path), "--min-frames", "12"]) == 0
    out = capsys.readouterr().out
    assert "3 episodes" in out and "36 frames" in out and "train 2" in out


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _break_missing_label(split: Path) -> str:
    (split / "ep000.json").unlink()
    return "ep000: missing label"


def _break_missing_video(split: Path) -> str:
    import shutil

    shutil.rmtree(split / "ep000")
    return "ep000.json: label without video"


def _break_frame_count(split: Path) -> str:
    _edit_json(split / "ep000.json", num_frames=13, phase_ids=[0] * 13, anomaly_mask=None)
    return "ep000.json: frame-count mismatch: num_frames is 13 but ep000 decodes to 12"


def _break_phase_id(split: Path) -> str:
    _edit_json(split / "ep000.json", phase_ids=[0] * 11 + [5])
    return "ep000.json: unknown phase id(s) [5]"


def _break_phase_len(split: Path) -> str:
    _edit_json(split / "ep000.json", phase_ids=[0] * 11)
    return "ep000.json: phase_ids has 11 entries but num_frames is 12"


def _break_key_event(split: Path) -> str:
    _edit_json(split / "ep000.json", key_events={"pour": 40})
    return "ep000.json: key event 'pour' at frame 40 is outside 0..11"


def _break_anomaly_mask(split: Path) -> str:
    _edit_json(split / "ep000.json", anomaly="drop", anomaly_mask=[1, 0])
    return "ep000.json: anomaly_mask has 2 entries"


def _break_unreadable_video(split: Path) -> str:
    (split / "ep000" / "000003.png").write_bytes(b"garbage")
    return "000003.png: unreadable image"


def _break_truncated_json(split: Path) -> str:
    path = split / "ep000.json"
    path.write_text(path.read_text()[:40])
    return "ep000.json: invalid or truncated JSON"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_missing_label,
        _break_missing_video,
        _break_frame_count,
        _break_phase_id,
        _break_phase_len,
        _break_key_event,
        _break_anomaly_mask,
        _break_unreadable_video,
        _break_truncated_json,
    ],
)
def test_check_reports_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture, breaker) -> None:
    make_dataset(tmp_path, {"train": 2})
    expected = breaker(tmp_path / "train")
    assert check_main([str(tmp_path), "--min-frames", "8"]) == 1
    lines = capsys.readouterr().out.splitlines()
    problems = [line for line in lines if not line.startswith("warning:")]
    assert any(expected in line for line in problems), lines
    # only the broken episode is reported: ep001 stays clean
    assert not any("ep001" in line for line in problems), problems


def test_check_unreadable_mp4(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"train": 1}, fmt="mp4")
    (tmp_path / "train" / "ep000.mp4").write_bytes(b"\x00" * 100)
    report = check_dataset(tmp_path)
    assert not report.ok and any("ep000.mp4: " in p for p in report.problems)


def test_check_not_a_dataset(tmp_path: Path) -> None:
    assert check_main([str(tmp_path / "nothing")]) == 1
    assert not check_dataset(tmp_path).ok  # empty folder: no splits


def _problems_and_warnings(capsys: pytest.CaptureFixture) -> tuple[list[str], list[str]]:
    lines = capsys.readouterr().out.splitlines()
    return [x for x in lines if not x.startswith(("warning:", "ok:"))], [
        x for x in lines if x.startswith("warning:")
    ]


def test_check_flags_videos_shorter_than_the_context_window(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_dataset(tmp_path, {"train": 1, "val": 1})
    assert check_main([str(tmp_path)]) == 1
    problems, _ = _problems_and_warnings(capsys)
    assert len(problems) == 2 and all(
        "12 frames, shorter than the model's context window of 16 frames" in p
        and "Kendall's tau is undefined" in p
        for p in problems
    )
    assert check_main([str(tmp_path), "--min-frames", "12"]) == 0


def test_check_accepts_a_flat_folder_of_videos_and_says_validation_reuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tcc_model.data.registry import load_dataset_split

    write_video(tmp_path / "a.mp4", make_frames(20), fps=10.0)
    write_video(tmp_path / "b.mp4", make_frames(18), fps=10.0)
    write_episode(tmp_path, "c", make_frames(16), make_labels(16), "png")  # a frame folder
    (tmp_path / "c.json").unlink()
    assert check_main([str(tmp_path)]) == 0
    problems, warnings = _problems_and_warnings(capsys)
    assert problems == []
    assert any("trains and validates on the same videos" in w for w in warnings)
    assert check_dataset(tmp_path).frames == {"(flat)": 54}
    # the same folder is what training reads
    assert len(load_dataset_split(f"folder:{tmp_path}", "val")) == 3
    write_video(tmp_path / "short.mp4", make_frames(6), fps=10.0)
    assert check_main([str(tmp_path)]) == 1
    assert "short.mp4: 6 frames, shorter than" in capsys.readouterr().out


def test_check_accepts_unlabelled_split_folders(tmp_path: Path, capsys) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        write_video(tmp_path / split / "x.mp4", make_frames(20), fps=10.0)
    assert check_main([str(tmp_path)]) == 0
    _, warnings = _problems_and_warnings(capsys)
    assert sum("unlabelled videos" in w for w in warnings) == 2


def test_check_catches_split_folders_the_manifest_does_not_list(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_dataset(tmp_path, {"train": 1, "val": 1}, n=16)
    write_episode(tmp_path / "test", "ep000", make_frames(16), make_labels(16), "png")
    assert check_main([str(tmp_path)]) == 1
    problems, _ = _problems_and_warnings(capsys)
    assert problems == [
        f"{tmp_path / 'test'}: split folder not listed in {tmp_path / 'manifest.json'} (splits: "
        "train, val); an interrupted or foreign conversion? remove the folder, or convert it "
        "again so the manifest lists it"
    ]
    import shutil

    shutil.rmtree(tmp_path / "test")
    shutil.rmtree(tmp_path / "val")
    assert check_main([str(tmp_path)]) == 1
    assert "lists split 'val' (1 episodes) but" in capsys.readouterr().out


# --------------------------------------------------------------------------- TFRecord import:
# a tiny protobuf writer


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_field(number: int, payload: bytes) -> bytes:
    """Length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(*values: bytes) -> bytes:
    return pb_field(1, b"".join(pb_field(1, v) for v in values))


def int64_feature(*values: int, packed: bool = True) -> bytes:
    if packed:
        return pb_field(3, pb_field(1, b"".join(varint(v) for v in values)))
    return pb_field(3, b"".join(varint(1 << 3 | 0) + varint(v) for v in values))


def feature_map(entries: dict[str, bytes]) -> bytes:
    return b"".join(
        pb_field(1, pb_field(1, k.encode()) + pb_field(2, v)) for k, v in entries.items()
    )


def sequence_example(context: dict[str, bytes], lists: dict[str, list[bytes]]) -> bytes:
    feature_lists = {k: b"".join(pb_field(1, f) for f in v) for k, v in lists.items()}
    return pb_field(1, feature_map(context)) + pb_field(2, feature_map(feature_lists))


def tfrecord(records: list[bytes]) -> bytes:
    out = b""
    for data in records:
        length = struct.pack("<Q", len(data))
        out += length + struct.pack("<I", masked_crc32c(length))
        out += data + struct.pack("<I", masked_crc32c(data))
    return out


def tcc_video(name: str, labels: list[int], size: int = 16) -> tuple[bytes, list[bytes]]:
    jpegs = []
    for t in range(len(labels)):
        frame = np.full((size, size, 3), 10 + 20 * t, np.uint8)
        jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
    record = sequence_example(
        {
            "name": bytes_feature(name.encode()),
            "len": int64_feature(len(labels)),
            "label": int64_feature(-1),
        },
        {
            "video": [bytes_feature(j) for j in jpegs],
            "frame_labels": [int64_feature(k, packed=False) for k in labels],
        },
    )
    return record, jpegs


# --------------------------------------------------------------------------- tests


def test_crc32c_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C (Castagnoli) check value
    assert crc32c(b"") == 0


def test_parse_features() -> None:
    assert parse_feature(int64_feature(3, -1, 300)) == [3, -1, 300]
    assert parse_feature(int64_feature(7, -2, packed=False)) == [7, -2]
    assert parse_feature(bytes_feature(b"a", b"bc")) == [b"a", b"bc"]
    floats = pb_field(2, pb_field(1, struct.pack("<2f", 0.5, -2.0)))
    assert parse_feature(floats) == [0.5, -2.0]


def test_parse_sequence_example() -> None:
    record, jpegs = tcc_video("v1", [0, 1, 1])
    example = parse_sequence_example(record)
    assert example.context["name"] == [b"v1"] and example.context["label"] == [-1]
    assert [f[0] for f in example.feature_lists["video"]] == jpegs
    assert [f[0] for f in example.feature_lists["frame_labels"]] == [0, 1, 1]


def test_tfrecord_framing_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord([b"first", b"second record"]))
    assert list(iter_tfrecord(path, verify_data_crc=True)) == [b"first", b"second record"]
    data = bytearray(path.read_bytes())
    data[14] ^= 0xFF  # inside the first payload
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="x.tfrecord: record 0 has a bad data checksum"):
        list(iter_tfrecord(path, verify_data_crc=True))
    path.write_bytes(tfrecord([b"first"])[:-6])
    with pytest.raises(DatasetError, match="truncated"):
        list(iter_tfrecord(path))
    path.write_bytes(b"\x05" + b"\x00" * 11)
    with pytest.raises(DatasetError, match="bad length checksum"):
        list(iter_tfrecord(path))


def _write_shards(tmp_path: Path) -> tuple[list[bytes], list[bytes]]:
    rec_a, jpegs_a = tcc_video("pour/vid a", [0, 0, 1, 1, 2, 2])
    rec_b, jpegs_b = tcc_video("vid_b", [0, 1, 1, 1, 3, 3])
    (tmp_path / "pouring_train-0-of-2.tfrecord").write_bytes(tfrecord([rec_a]))
    (tmp_path / "pouring_train-1-of-2.tfrecord").write_bytes(tfrecord([rec_b]))
    return jpegs_a, jpegs_b


def test_convert_lossless_jpeg_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    jpegs_a, _ = _write_shards(tmp_path)
    out = tmp_path / "pouring"
    pattern = str(tmp_path / "pouring_train-*.tfrecord")
    assert tfrecord_main(["--input", pattern, "--out", str(out), "--split", "train"]) == 0
    episodes = load_split(out, "train")
    assert [e.name for e in episodes] == ["vid_a", "vid_b"]
    first = episodes[0]
    assert first.labels.phase_names == ["phase_0", "phase_1", "phase_2", "phase_3"]
    assert first.labels.phase_ids == [0, 0, 1, 1, 2, 2]
    assert first.labels.key_events == {"phase_1": 2, "phase_2": 4}
    assert episodes[1].labels.key_events == {"phase_1": 1, "phase_3": 4}
    stored = sorted((out / "train" / "vid_a").iterdir())
    assert [p.read_bytes() for p in stored] == jpegs_a  # frames copied unchanged
    assert first.load_frames().shape == (6, 16, 16, 3)
    assert read_manifest(out)["splits"] == {"train": 2}
    assert check_dataset(out, min_frames=1).ok  # 6-frame test videos


def test_convert_mp4_with_names_and_resize(tmp_path: Path) -> None:
    _write_shards(tmp_path)
    out = tmp_path / "ds"
    args = ["--out", str(out), "--split", "val", "--video-format", "mp4", "--size", "8"]
    names = "--phase-names=start,a,b,end"
    assert (
        tfrecord_main(["--input", str(tmp_path / "pouring_train-0-of-2.tfrecord"), *args, names])
        == 0
    )
    (episode,) = load_split(out, "val")
    assert episode.labels.phase_names == ["start", "a", "b", "end"]
    assert episode.labels.key_events == {"a": 2, "b": 4}
    frames = episode.load_frames()
    assert frames.shape == (6, 8, 8, 3)
    assert np.abs(frames[:, 4, 4, 0].astype(int) - (10 + 20 * np.arange(6))).max() <= 4


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        tfrecord_main(["--input", str(tmp_path / "none-*.tfrecord"), "--out", "o", "--split", "t"])
        == 2
    )
    assert "matches no files" in capsys.readouterr().err
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(b"not a tfrecord at all")
    assert (
        tfrecord_main(["--input", str(bad), "--out", str(tmp_path / "o"), "--split", "train"]) == 2
    )  # a user error: the exit status of the shared CLI convention
    err = capsys.readouterr().err
    assert "error: " in err and "bad.tfrecord" in err
