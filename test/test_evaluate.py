"""The evaluation package: layout kept importable, and reports that name their episodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcc_model.evaluate import EmbeddedVideo, write_visual_reports


class _Episode:
    """Stand-in for ``tcc_model.data.format.Episode``: frames of a square moving right."""

    def __init__(self, length: int, size: int = 48) -> None:
        self.length, self.size = length, size

    def load_frames(self) -> np.ndarray:
        frames = np.zeros((self.length, self.size, self.size, 3), np.uint8)
        for t, x in enumerate(np.linspace(0, self.size - 8, self.length).astype(int)):
            frames[t, 10:18, x : x + 8] = 255
        return frames


def _video(name: str, length: int) -> EmbeddedVideo:
    t = np.linspace(0, 1, length)
    embs = np.stack([t, t**2, np.sin(3 * t)], axis=1)
    phases = np.minimum((t * 3).astype(np.int64), 2)
    key_events = {"b": int(np.argmax(phases == 1)), "c": int(np.argmax(phases == 2))}
    return EmbeddedVideo(
        name, embs, phases, ["a", "b", "c"], key_events, fps=10.0, episode=_Episode(length)
    )


def test_visual_reports_name_every_episode(tmp_path: Path, monkeypatch) -> None:
    from tcc_model import visualize

    videos = [_video("ep_alpha", 20), _video("ep_beta", 24), _video("ep_gamma", 18)]
    grids: list[dict] = []
    real_grid = visualize.write_synchronized_grid

    def recording_grid(path, *args, **kwargs):
        grids.append(kwargs)
        return real_grid(path, *args, **kwargs)

    monkeypatch.setattr(visualize, "write_synchronized_grid", recording_grid)
    texts: list[str] = []
    from tcc_model.visualize import plots

    real_save = plots.save_figure

    def recording_save(fig, path):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", recording_save)
    written = write_visual_reports([], videos, tmp_path)
    assert {"similarity.png", "embeddings_pca.png", "synchronized.mp4"} <= set(written)
    # the grid's tiles are captioned with the episodes (reference first) and their phases
    assert grids[0]["names"] == ["ep_alpha (reference)", "ep_beta", "ep_gamma"]
    assert [list(p) for p in grids[0]["phases"]] == [list(v.phase_ids) for v in videos]
    assert grids[0]["phase_names"] == ["a", "b", "c"]
    # the 2-D projection names each trajectory at its first frame
    assert {"ep_alpha", "ep_beta", "ep_gamma"} <= set(texts)


def test_projection_names_only_a_readable_number_of_trajectories(tmp_path, monkeypatch):
    from tcc_model.visualize import plots

    texts: list[str] = []
    real_save = plots.save_figure

    def recording_save(fig, path):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", recording_save)
    many = [_video(f"v{i}", 12).embs for i in range(plots.MAX_NAMED_TRAJECTORIES + 1)]
    names = [f"v{i}" for i in range(len(many))]
    plots.plot_embeddings_2d(many, tmp_path / "many.png", names=names)
    assert texts == []  # too many to name legibly
    plots.plot_embeddings_2d(many[:2], tmp_path / "two.png", names=names[:2])
    assert sorted(texts) == ["v0", "v1"]


@pytest.mark.parametrize(
    "module", ["tcc_model.evaluate", "tcc_model.data.sim_pouring", "tcc_model.data.check"]
)
def test_help_of_split_commands_is_fast_and_does_not_import_torch(module: str) -> None:
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{module}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
        "assert 'mujoco' not in sys.modules, 'mujoco imported for --help'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_old_import_paths_still_work() -> None:
    from tcc_model import evaluate, evaluate_reports
    from tcc_model.data import sim_pouring

    assert evaluate_reports.headline is evaluate.headline
    assert callable(evaluate.cli) and callable(evaluate.main) and callable(evaluate.run_protocols)
    assert callable(sim_pouring.main) and sim_pouring.DATASET_NAME == "sim_pouring"
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = evaluate.no_such_name


def test_summary_shows_the_boundary_breakdown_when_measured() -> None:
    from tcc_model.evaluate import summary_markdown

    config = {"checkpoint": "c.pt", "dataset": "d", "stride": 2, "distance": "sqeuclidean"}
    config["few_shot_seed"] = 0
    probe = {"value": 0.9, "errors_per_boundary": 1.75, "interior_accuracy": 0.98}
    metrics = {
        "num_videos": {"train": 4, "val": 2},
        "num_frames": {"train": 40, "val": 20},
        "phase_classification": {"0.1": probe},
    }
    text = summary_markdown(metrics, config)
    assert "errors per phase change" in text and "| 1.75 / 98.00 |" in text
    probe.update(errors_per_boundary=None, interior_accuracy=None)  # reports from before
    assert "errors per phase change" not in summary_markdown(metrics, config)
