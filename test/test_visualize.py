"""Pictures: what each plot shows (labels, colourbars, marks), video captions, report helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcc_model import reporting
from tcc_model import visualize as vis
from tcc_model.visualize import metrics, plots, timeline

PHASES = ["reach", "tilt", "pour", "return"]


def _trajectory(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    return np.concatenate([np.sin(3 * t + np.arange(3)), np.cos(2 * t)], 1) + 0.01 * rng.normal(
        size=(n, 4)
    )


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Keep the figures the plot functions save (they are still written to disk)."""
    kept: list[Any] = []
    real = reporting.save_figure

    def keep(fig: Any, path: str | Path) -> Path:
        kept.append(fig)
        fig.canvas.draw()  # lay out now: the texts' positions are checked after closing
        return real(fig, path)

    for module in (plots, timeline, metrics):
        monkeypatch.setattr(module, "save_figure", keep)
    return kept


def test_similarity_panels_have_colourbars_and_separate_titles(tmp_path: Path, figures) -> None:
    videos = [_trajectory(n, s) for s, n in enumerate((20, 25, 30))]
    titles = ["pour_000012_long_name vs pour_000013", "pour_000012_long_name vs pour_000014"]
    path = vis.plot_similarity_matrices(
        [(videos[0], videos[1]), (videos[0], videos[2])], tmp_path / "s.png", titles
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    fig = figures[0]
    colourbars = [ax for ax in fig.axes if "similarity" in ax.get_ylabel()]
    assert len(colourbars) == 2
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "frame of video B"]
    boxes = [ax.title.get_window_extent() for ax in panels]
    assert not boxes[0].overlaps(boxes[1])


def test_pca_plot_names_its_axes_and_phases(tmp_path: Path, figures) -> None:
    videos = [_trajectory(20, s) for s in range(2)]
    phases = [np.repeat([0, 1], 10)] * 2
    vis.plot_embeddings_2d(videos, tmp_path / "p.png", phases, ["reach", "tilt"])
    ax = figures[0].axes[0]
    assert ax.get_xlabel().startswith("PC 1 (") and "% of variance" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("PC 2 (")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reach", "tilt"]


def test_progress_curves_mark_the_reference_with_a_readable_legend(tmp_path: Path, figures) -> None:
    videos = [_trajectory(20, s) for s in range(3)]
    vis.plot_progress_curves(videos, videos[0], tmp_path / "c.png", ["ref", "b", "c"])
    legend = figures[0].axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "ref (reference)" and labels[1:] == ["b", "c"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 8
    assert "ref" in figures[0].axes[0].get_ylabel()


def _episode(n: int = 60, onset: int = 40) -> vis.EpisodeTimeline:
    truth = np.linspace(0, 1, n)
    score = np.r_[np.full(onset, 0.2), np.linspace(0.5, 2.0, n - onset)]
    mask = np.arange(n) >= onset
    phase = np.minimum((truth * 4).astype(int), 3)
    return vis.EpisodeTimeline(
        "ep7",
        progress=truth + 0.02,
        phase=phase,
        true_progress=truth,
        true_phase=phase,
        score=score,
        alarm=score > 1.0,
        anomaly_mask=mask,
        threshold=1.0,
        phase_names=PHASES,
        fps=10.0,
    )


def test_timeline_marks_onset_alarms_and_threshold(tmp_path: Path, figures) -> None:
    tl = _episode()
    vis.plot_episode_timeline(tl, tmp_path / "t.png")
    progress_ax, phase_ax, score_ax = figures[0].axes[:3]
    onset_lines = [ln for ln in progress_ax.lines if ln.get_label() == "anomaly onset"]
    assert onset_lines and onset_lines[0].get_xdata()[0] == pytest.approx(4.0)  # frame 40 at 10 fps
    alarm = [ln for ln in progress_ax.lines if ln.get_label() == "alarm"][0]
    assert len(alarm.get_xdata()) == int(tl.alarm.sum())
    threshold = [ln for ln in score_ax.lines if ln.get_label().startswith("threshold")][0]
    assert set(threshold.get_ydata()) == {1.0}
    assert [t.get_text() for t in phase_ax.get_yticklabels()] == PHASES
    assert score_ax.get_xlabel() == "time (s)"


def test_timeline_overview_legend_lists_what_is_drawn(tmp_path: Path, figures) -> None:
    normal = _episode()
    normal.anomaly_mask, normal.alarm = None, None
    vis.plot_timeline_overview([normal, _episode()], tmp_path / "o.png")
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert labels == ["monitor", "truth", "anomalous (truth)", "anomaly onset", "alarm"]


def test_timeline_rejects_arrays_of_another_length() -> None:
    with pytest.raises(ValueError, match="ep: score has 3 frames, not 4"):
        vis.EpisodeTimeline("ep", progress=np.zeros(4), score=np.zeros(3))


def test_phase_confusion_counts_every_frame_once() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(-1, 3, 500)
    pred = rng.integers(-1, 4, 500)  # 3 is out of range: counted as "no phase"
    counts = vis.phase_confusion(true, pred, 3)
    expected = np.zeros((3, 4), dtype=np.int64)
    for t, p in zip(true, pred):
        if t >= 0:
            expected[t, p if 0 <= p < 3 else 3] += 1
    np.testing.assert_array_equal(counts, expected)


def test_confusion_plot_title_gives_accuracy(tmp_path: Path, figures) -> None:
    true = np.repeat([0, 1, 2], 10)
    pred = true.copy()
    pred[:5] = 1
    vis.plot_phase_confusion(true, pred, ["a", "b", "c"], tmp_path / "m.png")
    ax = figures[0].axes[0]
    assert "83.3% of 30 frames" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]  # no "none" column


def test_loss_curve_gives_every_curve_its_own_panel_and_scale(tmp_path: Path, figures) -> None:
    steps = np.arange(100)
    vis.plot_loss_curve(
        {"loss": (steps, 10.0 * np.exp(-steps / 10)), "l2": (steps, 1e-4 + 0 * steps)},
        tmp_path / "l.png",
        val={"kendalls_tau": ([50, 99], [0.4, 0.6])},
    )
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["train loss", "train l2", "val kendalls_tau"]
    assert [ax.get_yscale() for ax in panels] == ["log", "linear", "linear"]
    assert len(panels[0].lines) == 2 and len(panels[2].lines) == 1  # raw + smoothed; points
    with pytest.raises(ValueError, match="train is empty"):
        vis.plot_loss_curve({}, tmp_path / "l3.png")


def test_captions_darken_the_top_band_only() -> None:
    frames = np.full((3, 112, 112, 3), 200, np.uint8)
    out = vis.annotate_frames(frames, ["ep1\nframe 0", "", "ep1\nframe 2"])
    assert (out[0, :20] != 200).any() and (out[0, 60:] == 200).all()
    np.testing.assert_array_equal(out[1], frames[1])  # empty caption: untouched
    assert (frames == 200).all()  # input not modified
    tiny = np.zeros((1, 8, 8, 3), np.uint8)
    np.testing.assert_array_equal(vis.annotate_frames(tiny, ["x"]), tiny)


def test_synchronized_grid_captions_each_tile() -> None:
    embs = _trajectory(5)
    frames = np.full((5, 64, 64, 3), 255, np.uint8)
    plain = vis.synchronized_grid(frames, embs, [(frames, embs)], names=["", ""])
    captioned = vis.synchronized_grid(
        frames, embs, [(frames, embs)], names=["a", "b"], phases=[[0] * 5, [1] * 5],
        phase_names=["x", "y"],
    )  # fmt: skip
    changed = (plain != captioned).any(axis=(0, 3))
    assert changed[:30, 2:62].any() and changed[:30, 66:126].any()  # names, both tiles
    assert changed[50:, 2:62].any() and changed[50:, 66:126].any()  # phases at the bottom
    assert not changed[32:48].any()
    assert vis.phase_text(np.array([0, 1]), ["x", "y"], 1) == "phase y"
    with pytest.raises(ValueError, match="names has 1 entries for 2 videos"):
        vis.synchronized_grid(frames, embs, [(frames, embs)], names=["a"])


def test_strict_json_and_number_format() -> None:
    value = {"tau": float("nan"), "x": [np.float32(0.5), float("inf")], "n": np.int64(2)}
    text = reporting.strict_json(value)
    assert json.loads(text) == {"tau": None, "x": [0.5, None], "n": 2}
    assert "NaN" not in text and "Infinity" not in text
    assert reporting.fmt(float("nan")) == "n/a" and reporting.fmt(None) == "n/a"
    assert reporting.fmt(0.7301, "{:.1%}") == "73.0%" and reporting.fmt(np.float64(2.0)) == "2.000"
    assert reporting.fmt("cpu") == "cpu" and reporting.fmt(True) == "True"
    assert reporting.fmt(12) == "12" and reporting.fmt(1, "{:.0%}") == "100%"


@pytest.mark.parametrize(
    "module",
    [
        "tcc_model.data.check",
        "tcc_model.align",
        "tcc_model.applications",
        "tcc_ros.evaluate_bag",
        "tcc_ros.record_sim_bag",
        "tcc_ros.demo_summary",
    ],
)
def test_help_is_clean_and_loads_no_torch(module: str) -> None:
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "sys.argv = ['x', '--help']\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and done.stdout.strip().endswith("no torch")
    assert "warning" not in done.stderr.lower() and "error" not in done.stderr.lower()


def test_timeline_from_monitor_results() -> None:
    from tcc_model.stream import FrameResult

    results = [
        FrameResult(0, valid=False),
        FrameResult(1, valid=True, progress=0.5, phase_id=2, anomaly_score=1.5, anomaly=True),
    ]
    tl = vis.timeline_from_results("ep", results, PHASES, true_progress=np.array([0.0, 0.4]))
    np.testing.assert_array_equal(tl.progress, [np.nan, 0.5])
    assert tl.phase.tolist() == [-1, 2] and tl.alarm.tolist() == [False, True]
    assert np.isnan(tl.score[0]) and tl.score[1] == 1.5


def test_loss_curves_read_back_from_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in (20, 40, 60):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/clips_per_s", 14.0, step)
    writer.add_scalar("val/tau", 0.5, 60)
    writer.close()
    train, val = vis.curves_from_tensorboard(tmp_path / "tb")
    assert list(train) == ["loss"] and train["loss"][0] == [20, 40, 60]
    assert train["loss"][1] == pytest.approx([1 / 20, 1 / 40, 1 / 60])
    assert val == {"tau": ([60], [0.5])}
    with pytest.raises(FileNotFoundError, match="no TensorBoard folder"):
        vis.curves_from_tensorboard(tmp_path / "nope")
