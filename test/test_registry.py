"""Dataset registry: names, real-data errors, folder datasets and the simulator cache."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tcc_model.data import registry
from tcc_model.data.format import DatasetError, EpisodeLabels, write_episode, write_manifest
from tcc_model.data.registry import load_dataset_split, resolve_dataset


def _frames(n: int) -> np.ndarray:
    frames = np.zeros((n, 16, 16, 3), np.uint8)
    frames[:] = np.linspace(0, 250, n).astype(np.uint8)[:, None, None, None]
    return frames


def _write_dataset(root: Path, splits: dict[str, int], n: int = 6) -> None:
    for split, count in splits.items():
        for i in range(count):
            labels = EpisodeLabels(
                video="",
                fps=10.0,
                num_frames=n,
                phase_names=["a", "b"],
                phase_ids=[0] * 3 + [1] * (n - 3),
                key_events={"b": 3},
            )
            write_episode(root / split, f"ep{i}", _frames(n), labels, video_format="png")
    write_manifest(root, {"name": root.name, "phase_names": ["a", "b"], "splits": splits})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TCC_DATA_ROOT", raising=False)
    monkeypatch.setenv("TCC_CACHE_DIR", str(tmp_path / "cache"))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'pourin'.*sim_pouring.*folder:PATH"):
        resolve_dataset("pourin")


@pytest.mark.parametrize("name", ["pouring", "penn_action"])
def test_absent_real_dataset_says_what_to_do(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        resolve_dataset(name, data_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message
    assert "python -m tcc_model.data.tfrecord" in message
    assert "--dataset sim_pouring" in message
    assert "TCC_DATA_ROOT" in message


def test_absent_real_dataset_without_any_root() -> None:
    with pytest.raises(DatasetError, match="neither is set"):
        resolve_dataset("pouring")


def test_real_dataset_found_via_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_dataset(tmp_path / "data" / "pouring", {"train": 2, "val": 1})
    monkeypatch.setenv("TCC_DATA_ROOT", str(tmp_path / "data"))
    assert resolve_dataset("pouring") == tmp_path / "data" / "pouring"
    episodes = load_dataset_split("pouring", "val")
    assert [e.name for e in episodes] == ["ep0"] and episodes[0].labels.has_phase_labels


def test_penn_action_per_action(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "penn_action" / "bench_press", {"train": 2})
    with pytest.raises(DatasetError, match=r"penn_action/<action>.*bench_press"):
        resolve_dataset("penn_action", data_root=tmp_path)
    episodes = load_dataset_split("penn_action/bench_press", "train", data_root=tmp_path)
    assert len(episodes) == 2


def test_folder_in_dataset_format(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "mine", {"train": 3})
    episodes = load_dataset_split(f"folder:{tmp_path / 'mine'}", "train")
    assert [e.name for e in episodes] == ["ep0", "ep1", "ep2"]
    assert episodes[1].labels.phase_ids == [0, 0, 0, 1, 1, 1]


def test_flat_folder_of_videos_is_unlabelled(tmp_path: Path) -> None:
    from tcc_model.data.format import write_frame_folder, write_video

    write_video(tmp_path / "b_clip.mp4", _frames(7), fps=15.0)
    write_frame_folder(tmp_path / "a_frames", _frames(4))
    (tmp_path / "notes.txt").write_text("ignored")
    for split in ("train", "val"):  # a flat folder has no splits: every split is all videos
        episodes = load_dataset_split(f"folder:{tmp_path}", split)
        assert [e.name for e in episodes] == ["a_frames", "b_clip"]
        assert all(e.labels.phase_ids is None and e.split == split for e in episodes)
    clip = episodes[1]
    assert clip.num_frames == 7 and clip.labels.fps == pytest.approx(15.0)
    assert clip.load_frames().shape == (7, 16, 16, 3)
    assert clip.labels.phase_id_array().tolist() == [-1] * 7


def test_unlabelled_split_folders(tmp_path: Path) -> None:
    from tcc_model.data.format import write_video

    write_video(tmp_path / "train" / "x.mp4", _frames(5), fps=10.0)
    write_video(tmp_path / "val" / "y.mp4", _frames(5), fps=10.0)
    assert [e.name for e in load_dataset_split(f"folder:{tmp_path}", "val")] == ["y"]
    with pytest.raises(DatasetError, match="'test' not found"):
        load_dataset_split(f"folder:{tmp_path}", "test")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="folder not found"):
        resolve_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match="neither a dataset"):
        resolve_dataset(f"folder:{tmp_path}")


def _fake_simulator(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[dict]:
    calls: list[dict] = []

    def generate_dataset(out_dir, episodes, size=112, seed=0, progress=True, **kwargs):
        calls.append(
            {
                "out_dir": Path(out_dir),
                "episodes": episodes,
                "size": size,
                "seed": seed,
                "variation": kwargs.get("variation"),
            }
        )
        _write_dataset(Path(out_dir), {"train": episodes - 1, "val": 1})
        if fail:
            raise KeyboardInterrupt

    module = types.ModuleType("tcc_model.data.sim_pouring")
    module.generate_dataset = generate_dataset
    monkeypatch.setitem(sys.modules, "tcc_model.data.sim_pouring", module)
    return calls


def test_sim_dataset_generated_once_and_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _fake_simulator(monkeypatch)
    root = resolve_dataset("sim_pouring", sim_episodes=3, sim_size=32, progress=False)
    version = registry.SIM_GENERATOR_VERSION
    assert root == tmp_path / "cache" / f"sim_pouring-g{version}-station-3-32-0"
    assert calls[0]["episodes"] == 3 and calls[0]["size"] == 32
    assert calls[0]["variation"] == "station"
    assert calls[0]["out_dir"] != root  # generated elsewhere, renamed when complete
    again = load_dataset_split("sim_pouring", "train", sim_episodes=3, sim_size=32)
    assert len(calls) == 1 and len(again) == 2
    other = resolve_dataset("sim_pouring", cache_dir=tmp_path / "c2", sim_episodes=4)
    assert other.name == f"sim_pouring-g{version}-station-4-112-0" and len(calls) == 2


def test_sim_cache_of_another_generator_version_is_not_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _fake_simulator(monkeypatch)
    first = resolve_dataset("sim_pouring", sim_episodes=3, sim_size=32, progress=False)
    monkeypatch.setattr(registry, "SIM_GENERATOR_VERSION", registry.SIM_GENERATOR_VERSION + 1)
    second = resolve_dataset("sim_pouring", sim_episodes=3, sim_size=32, progress=False)
    assert len(calls) == 2  # the newer simulator renders its own data
    assert second != first and first.is_dir() and second.is_dir()
    assert f"-g{registry.SIM_GENERATOR_VERSION}-" in second.name


def test_interrupted_sim_generation_leaves_no_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_simulator(monkeypatch, fail=True)
    with pytest.raises(KeyboardInterrupt):
        resolve_dataset("sim_pouring", sim_episodes=3, sim_size=32)
    assert list((tmp_path / "cache").iterdir()) == []


def test_sim_arguments_validated() -> None:
    with pytest.raises(DatasetError, match="sim_episodes"):
        resolve_dataset("sim_pouring", sim_episodes=1)
