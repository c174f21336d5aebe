"""Tests of the MuJoCo pouring simulator and the sim_pouring dataset generator (tiny episodes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")

pytest.importorskip("mujoco")

from tcc_model.data.format import (  # noqa: E402
    ANOMALY_TYPES,
    SPLITS,
    EpisodeLabels,
    load_split,
    read_manifest,
)
from tcc_model.data.sim_pouring import dataset as sim_dataset  # noqa: E402
from tcc_model.data.sim_pouring import (  # noqa: E402
    generate_dataset,
    main,
    plan_dataset,
    render_episode,
    split_counts,
)
from tcc_model.sim import FINE_PHASES, KEY_EVENTS, POURING_PHASES  # noqa: E402

SIZE = 64
SHORT = {"min_frames": 30, "max_frames": 36}


def _check_phase_labels(labels: dict) -> np.ndarray:
    """Shared invariants; returns the phase ids."""
    n = labels["num_frames"]
    phase = np.asarray(labels["phase_ids"])
    assert len(phase) == n and labels["phase_names"] == list(POURING_PHASES)
    assert np.all(np.diff(phase) >= 0), "Pouring phases must never go back"
    # key events, in phase order, are exactly the first frames of phases 1..K
    events = labels["key_events"]
    assert list(events) == list(KEY_EVENTS[: len(events)])
    starts = [int(np.argmax(phase == k)) for k in range(1, phase.max() + 1)]
    assert list(events.values()) == starts
    assert EpisodeLabels.from_dict(labels | {"video": "x.mp4"}).validate() == []
    return phase


def test_normal_episode_labels() -> None:
    frames, labels = render_episode(11, None, SIZE, **SHORT)
    n = labels["num_frames"]
    assert frames.shape == (n, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert SHORT["min_frames"] <= n <= SHORT["max_frames"]
    assert frames.std() > 5, "frames should show a scene, not a blank image"
    assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 0.5, "the robot should move"
    phase = _check_phase_labels(labels)
    assert labels["anomaly"] is None and labels["anomaly_mask"] is None
    assert list(labels["key_events"]) == list(KEY_EVENTS), "a normal episode passes every event"
    assert 0 < labels["key_events"]["hand_touches_bottle"]
    meta = labels["metadata"]
    fine = np.asarray(meta["fine_phase_ids"])
    assert meta["fine_phase_names"] == list(FINE_PHASES)
    assert np.all(np.diff(fine) >= 0) and fine[0] == 0 and fine[-1] == len(FINE_PHASES) - 1
    flow = np.asarray(meta["flow_mask"], dtype=bool)
    assert flow.any() and not np.asarray(meta["spill_mask"]).any()
    # the liquid flows exactly from "liquid_starts" to "pouring_complete"
    assert np.flatnonzero(flow)[0] == labels["key_events"]["liquid_starts"]
    assert np.flatnonzero(flow)[-1] + 1 == labels["key_events"]["pouring_complete"]
    assert np.all(phase[flow] == 2)
    assert meta["final_cup_fill"] > 0.05, "the cup should receive liquid"


def test_same_seed_same_frames() -> None:
    short = {"min_frames": 16, "max_frames": 16}
    a, labels_a = render_episode(5, "drop", 32, **short)
    b, labels_b = render_episode(5, "drop", 32, **short)
    np.testing.assert_array_equal(a, b)
    assert labels_a == labels_b
    c, _ = render_episode(6, "drop", 32, **short)
    assert c.shape != a.shape or not np.array_equal(a, c)


@pytest.mark.parametrize("anomaly", ANOMALY_TYPES)
def test_each_anomaly_renders_with_a_mask(anomaly: str) -> None:
    frames, labels = render_episode(21, anomaly, SIZE, **SHORT)
    n = labels["num_frames"]
    assert len(frames) == n
    _check_phase_labels(labels)
    assert labels["anomaly"] == anomaly
    mask = np.asarray(labels["anomaly_mask"])
    assert len(mask) == n and set(np.unique(mask)) <= {0, 1}
    assert 0 < mask.sum() < n, "the anomaly must cover some frames but not all"
    meta = labels["metadata"]
    fine = np.asarray(meta["fine_phase_ids"])
    if anomaly == "drop":
        assert meta["dropped"] and "liquid_starts" not in labels["key_events"]
        assert np.all(mask[int(np.argmax(mask)) :] == 1), "a drop is anomalous until the end"
    elif anomaly == "miss":
        spill = np.asarray(meta["spill_mask"], dtype=bool)
        assert spill.any() and np.array_equal(spill, mask.astype(bool))
    elif anomaly == "reversed":
        assert np.any(np.diff(fine) < 0), "a reversed step goes back to an earlier fine phase"
    else:  # stall: the hand stops
        assert meta["anomaly_info"]["stall_seconds"] >= 2.0


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="anomaly"):
        render_episode(0, "explode", SIZE)
    with pytest.raises(ValueError, match="size"):
        generate_dataset(tmp_path / "a", 2, size=63)
    with pytest.raises(ValueError, match="split_fractions"):
        generate_dataset(tmp_path / "b", 2, split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="anomaly_rate"):
        plan_dataset(4, anomaly_rate=1.5)
    assert not any(tmp_path.iterdir())


def test_plan_is_deterministic_and_keeps_normal_training_episodes() -> None:
    plan = plan_dataset(40, anomaly_rate=0.5, seed=3)
    assert plan == plan_dataset(40, anomaly_rate=0.5, seed=3)
    assert plan != plan_dataset(40, anomaly_rate=0.5, seed=4)
    assert len({p.seed for p in plan}) == 40
    per_split = {s: [p for p in plan if p.split == s] for s in SPLITS}
    assert [len(per_split[s]) for s in SPLITS] == split_counts(40, (0.7, 0.15, 0.15)) == [28, 6, 6]
    for split, members in per_split.items():
        anomalous = [p.anomaly for p in members if p.anomaly is not None]
        assert len(anomalous) == round(0.5 * len(members)), split
        counts = [anomalous.count(a) for a in ANOMALY_TYPES]
        assert max(counts) - min(counts) <= 1, "anomaly types come in equal shares"
    # a high rate still leaves a normal episode to train on
    tiny = plan_dataset(3, anomaly_rate=0.9, seed=0)
    assert any(p.split == "train" and p.anomaly is None for p in tiny)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_dataset_is_identical_for_any_worker_count(tmp_path: Path) -> None:
    kwargs = dict(size=SIZE, anomaly_rate=0.34, seed=7, fps=12.0, progress=False, **SHORT)
    one = generate_dataset(tmp_path / "one", 3, workers=1, **kwargs)
    two = generate_dataset(tmp_path / "two", 3, workers=2, **kwargs)
    digests = _digests(one)
    assert digests == _digests(two)
    assert sum(name.endswith(".mp4") for name in digests) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"], "no staging left over"
    manifest = read_manifest(one)
    assert manifest["name"] == "sim_pouring" and sum(manifest["splits"].values()) == 3
    splits = [s for s in SPLITS if manifest["splits"][s] > 0]
    assert sorted(splits) == sorted(p.name for p in one.iterdir() if p.is_dir())
    episodes = [e for split in splits for e in load_split(one, split)]
    assert len(episodes) == 3
    assert sum(e.labels.anomaly is not None for e in episodes) == 1
    for episode in episodes:
        frames = episode.load_frames()
        assert frames.shape == (episode.num_frames, SIZE, SIZE, 3)
    assert any(e.labels.anomaly is None for e in load_split(one, "train"))


def test_cli_unwritable_out_is_one_error_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["--out", str(blocker / "ds"), "--episodes", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and str(blocker / "ds") in err


@pytest.mark.slow
def test_cli_closes_with_the_wrote_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    args = ["--out", str(out), "--episodes", "1", "--size", "32", "--max-frames", "30"]
    assert main([*args, "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("generated 1 episodes (30 frames) in ")
    assert lines[-1] == f"wrote: dataset {out}, manifest {out / 'manifest.json'}"


def test_cli_refuses_non_empty_out(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["--out", str(tmp_path), "--episodes", "1", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_failed_generation_leaves_nothing(tmp_path: Path) -> None:
    # 1-frame episodes can never pass the label checks: the run fails in a worker
    with pytest.raises(RuntimeError, match="no valid simulation"):
        generate_dataset(tmp_path / "ds", 1, size=32, progress=False, min_frames=1, max_frames=1)
    assert list(tmp_path.iterdir()) == []


def _die_on_first_call(plan, root: Path, settings):
    """Stand-in for ``_generate_one`` in a spawned worker: the first call kills its process."""
    marker = root.parent / f"{plan.name}.crashed"
    if not marker.exists():
        marker.write_text("")
        os._exit(1)
    return sim_dataset._generate_one(plan, root, settings)


def _always_die(plan, root: Path, settings):
    os._exit(1)


@pytest.mark.slow
def test_a_dead_rendering_process_is_restarted_and_output_unchanged(tmp_path, monkeypatch, capsys):
    kwargs = dict(size=SIZE, seed=3, fps=12.0, progress=False, workers=1, **SHORT)
    reference = generate_dataset(tmp_path / "ref", 2, **kwargs)
    monkeypatch.setattr(sim_dataset, "_generate_one", _die_on_first_call)
    crashed = generate_dataset(tmp_path / "crashed", 2, **kwargs)
    assert _digests(crashed) == _digests(reference)
    assert "restarting the pool" in capsys.readouterr().err
    monkeypatch.setattr(sim_dataset, "_generate_one", _always_die)
    with pytest.raises(RuntimeError, match="crashed 4 times"):
        generate_dataset(tmp_path / "never", 1, **kwargs)
    assert not (tmp_path / "never").exists()
