"""Reference building and calibration (``python -m tcc_model.reference``) with a stand-in engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcc_model import reference
from tcc_model.data.format import EpisodeLabels, key_events_from_phase_ids, write_episode
from tcc_model.preprocess import PreprocessConfig, context_indices
from tcc_model.stream import DEFAULT_DETECTORS, ProgressMonitor, ReferenceSet

PHASES = ["reach", "pour", "place"]
SIZE = 8


class ContextEngine:
    """Encoder = mean colour per channel; head = the k context features concatenated."""

    bundle_id = "bundle-test"

    def __init__(self) -> None:
        self.preprocess = PreprocessConfig(image_size=SIZE, context_frames=2, context_stride=2)
        self.encoded = 0

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        self.encoded += len(frames)
        flat = frames.reshape(len(frames), -1, 3).astype(np.float32) / 255.0
        return flat.mean(axis=1)[:, :, None, None]

    def embed(self, context_features: np.ndarray) -> np.ndarray:
        return np.asarray(context_features, dtype=np.float32).reshape(len(context_features), -1)


class BatchEngine(ContextEngine):
    """Same engine with the batched ``embed_frames`` an InferenceEngine offers."""

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        feats = self.encode_frames(frames)
        idx = context_indices(np.arange(len(frames)), 2, 2)
        return self.embed(feats[idx])


def colour_episode(num_frames: int, seed: int, stall: int = 0) -> np.ndarray:
    """Frames whose colour walks along a fixed smooth path (time warped per episode)."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, num_frames) ** rng.uniform(0.8, 1.25)
    if stall:
        s = np.concatenate(
            [s[: num_frames // 2], np.full(stall, s[num_frames // 2]), s[num_frames // 2 :]]
        )
    colour = np.stack([40 + 170 * s, 200 - 150 * s**2, 120 + 80 * np.sin(3 * s)], axis=1)
    frames = np.repeat(colour[:, None, None, :], SIZE, 1).repeat(SIZE, 2)
    frames = frames + rng.normal(scale=1.0, size=frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def write(split_dir, name: str, frames: np.ndarray, anomaly: str | None = None) -> None:
    n = len(frames)
    phase_ids = np.minimum(np.arange(n) * len(PHASES) // n, len(PHASES) - 1).tolist()
    labels = EpisodeLabels(
        video="",
        fps=10.0,
        num_frames=n,
        phase_names=PHASES,
        phase_ids=phase_ids,
        key_events=key_events_from_phase_ids(phase_ids, PHASES),
        anomaly=anomaly,
        anomaly_mask=[0] * n if anomaly else None,
    )
    write_episode(split_dir, name, frames, labels, video_format="png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i in range(3):
        write(root / "train", f"demo{i}", colour_episode(40 + 5 * i, seed=i))
    write(root / "train", "broken", colour_episode(40, seed=9, stall=20), anomaly="stall")
    for i in range(6):
        write(root / "val", f"val{i}", colour_episode(35 + 4 * i, seed=20 + i))
    return root


def test_embed_video_uses_embed_frames_or_encodes_each_frame_once():
    frames = colour_episode(30, seed=1)
    plain, batched = ContextEngine(), BatchEngine()
    a = reference.embed_video(plain, frames, chunk=7)
    b = reference.embed_video(batched, frames)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert plain.encoded == 30 and a.shape == (30, 6) and a.dtype == np.float32
    with pytest.raises(ValueError, match="uint8"):
        reference.embed_video(plain, frames.astype(np.float32))


def test_cli_builds_calibrated_references_from_normal_episodes(dataset, tmp_path, monkeypatch):
    import tcc_model.engine

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    argv = ["--bundle", str(bundle), "--dataset", str(dataset), "--no-register"]
    assert reference.main(argv + ["--false-alarm-rate", "0.15"]) == 0

    refs = ReferenceSet.load(bundle, bundle_id="bundle-test")
    assert refs.reference_ids == ["train/demo0", "train/demo1", "train/demo2"]  # no anomaly
    assert refs.phase_names == PHASES and refs.dim == 6
    meta = json.loads((bundle / "references.json").read_text())
    cal = meta["calibration"]
    assert meta["bundle_id"] == "bundle-test"
    assert cal["num_episodes"] + cal["num_excluded"] == 6 and cal["false_alarm_rate"] == 0.15
    assert cal["method"] == "tail" and cal["episodes_needed"] == 6
    assert 0 <= cal["achieved_false_alarm_rate"] <= 0.15
    assert set(cal["detector_states"]) == set(DEFAULT_DETECTORS)
    assert cal["episodes"] == [f"val/val{i}" for i in range(6)]
    assert np.isfinite(cal["distance_threshold"]) and cal["temperature"] > 0
    # Ground-truth progress of each reference comes from its key events.
    assert refs.progress[0][0] == 0.0 and refs.progress[0][-1] == 1.0

    # The stored references drive the monitor on a new normal run without alarms ...
    engine = ContextEngine()
    monitor = ProgressMonitor(refs, engine=engine)
    results = [monitor.process_frame(f) for f in colour_episode(45, seed=77)]
    assert engine.encoded == 45
    assert results[-1].progress > 0.9 and not any(r.anomaly for r in results)
    # ... and flag a long stall.
    monitor.reset()
    stalled = [monitor.process_frame(f) for f in colour_episode(45, seed=78, stall=40)]
    assert any(r.anomaly_kind == "stalled" for r in stalled)


def test_too_few_calibration_episodes_for_the_rate_is_an_error_with_the_count(
    dataset, tmp_path, monkeypatch, capsys
):
    import tcc_model.engine

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    argv = ["--bundle", str(bundle), "--dataset", str(dataset), "--no-register"]
    assert reference.main(argv + ["--false-alarm-rate", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "6 normal episodes cannot support a false-alarm rate of 0.05" in err
    assert "needs at least 19" in err and "--false-alarm-rate >= 0.143" in err
    assert not (bundle / "references.json").exists()


def test_cli_errors_are_one_line_with_nonzero_exit(dataset, tmp_path, capsys):
    status = reference.main(["--bundle", str(tmp_path / "missing"), "--dataset", str(dataset)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error:") and "\n" not in err and "--bundle" in err
    status = reference.main(["--bundle", str(tmp_path), "--dataset", str(dataset)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "has no bundle.yaml" in err


def test_cli_on_unlabelled_videos_says_the_monitor_needs_phase_labels(tmp_path, capsys):
    root = tmp_path / "data"
    frames = colour_episode(20, seed=3)
    labels = EpisodeLabels(video="", fps=10.0, num_frames=20)  # no phase labels
    write_episode(root / "train", "plain", frames, labels, video_format="png")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    import tcc_model.engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
        status = reference.main(["--bundle", str(bundle), "--dataset", str(root)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "phase labels" in err and "--max-videos" not in err


def test_rest_phases_reach_the_monitor_through_the_calibration(dataset, tmp_path, monkeypatch):
    import tcc_model.engine
    from tcc_model.stream import monitor_config

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    argv = ["--bundle", str(bundle), "--dataset", str(dataset), "--no-register"]
    assert reference.main(argv + ["--rest-phases", "pour", "--false-alarm-rate", "0.2"]) == 0
    refs = ReferenceSet.load(bundle)
    assert monitor_config(bundle).rest_phases == ("pour",)
    assert ProgressMonitor(refs).config.rest_phases == ("pour",)


def test_no_normal_episodes_is_an_error():
    with pytest.raises(ValueError, match="no normal phase-labelled"):
        reference.build_references(ContextEngine(), [])


def test_split_references_gives_the_classifier_more_videos_than_the_references():
    videos = list("abcdef")
    assert reference.split_references(videos, 2, None) == (["a", "b"], list("cdef"))
    assert reference.split_references(videos, 2, 4) == (["a", "b"], ["c", "d"])
    assert reference.split_references(videos, 2, 0) == (["a", "b"], [])  # references only
    assert reference.split_references(videos, None, None) == (videos, [])


def test_cli_fits_the_phase_classifier_on_more_videos_than_it_keeps(
    dataset, tmp_path, monkeypatch, capsys
):
    import tcc_model.engine

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    argv = ["--bundle", str(bundle), "--dataset", str(dataset), "--no-register"]
    argv += ["--false-alarm-rate", "0.2"]
    assert reference.main(argv + ["--max-videos", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 reference episodes" in out and "+2 more for the phase classifier" in out
    assert "3 videos" in out
    refs = ReferenceSet.load(bundle)
    assert refs.reference_ids == ["train/demo0"] and refs.phase_weights is not None
    assert ReferenceSet.load(bundle).phase_lags == (1, 3, 6, 10)
    assert reference.main(argv + ["--max-videos", "1", "--classifier-videos", "-1"]) == 2
    assert reference.main(argv + ["--phase-lags"]) == 0  # the embedding alone
    refs = ReferenceSet.load(bundle)
    assert refs.phase_lags == () and refs.phase_weights.shape == (len(PHASES), refs.dim)
    assert reference.main(argv + ["--phase-lags", "0"]) == 2


def test_check_sets_record_shifted_false_alarms_before_the_files_are_registered(
    dataset, tmp_path, monkeypatch
):
    import hashlib

    import tcc_model.bundle
    import tcc_model.engine

    monkeypatch.setattr(tcc_model.engine, "load_bundle", lambda *a, **k: ContextEngine())
    registered: dict[str, str] = {}

    def register(bundle, names):  # noqa: ANN001, ANN202
        for name in names:
            registered[name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()

    monkeypatch.setattr(tcc_model.bundle, "register_files", register)
    sets = tmp_path / "sets"
    for i in range(3):
        write(sets / "control" / "test", f"c{i}", colour_episode(40, seed=40 + i))
        write(sets / "motion" / "test", f"m{i}", colour_episode(25, seed=40 + i))  # faster
    for name in ("control", "motion"):
        (sets / name / "manifest.json").write_text("{}")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("stand-in\n")
    argv = ["--bundle", str(bundle), "--dataset", str(dataset), "--false-alarm-rate", "0.15"]
    assert reference.main([*argv, "--check-sets", str(sets)]) == 0

    check = json.loads((bundle / "references.json").read_text())["calibration"]["shift_check"]
    assert check["factors"] == ["motion"] and check["sets"] == str(sets)
    assert check["per_set"]["control"]["episodes"] == 3
    assert check["single_factor_pooled"]["episodes"] == 3
    # the manifest's hashes are of the files as they end up (the check rewrites the json)
    for name, digest in registered.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name
