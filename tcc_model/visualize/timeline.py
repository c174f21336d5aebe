"""Per-episode timelines of a causal monitor: progress, phase and anomaly score over time.

One :class:`EpisodeTimeline` holds what the monitor said about every frame of an episode (and
the ground truth when known). :func:`plot_episode_timeline` draws one episode in three panels
(progress, phase, anomaly score against its threshold); :func:`plot_timeline_overview` draws the
progress of many episodes in a grid. Ground-truth anomalous frames are shaded red, the anomaly
onset is a dashed red line and every alarm a red tick. Used by the live report, the bag
evaluation and the streaming benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.reporting import pyplot, save_figure


@dataclass
class EpisodeTimeline:
    """Per-frame monitor outputs of one episode (arrays of equal length ``T``).

    ``progress`` is NaN where the monitor gave no estimate, ``phase`` -1; every optional array
    is ``None`` when unknown. ``threshold`` is the anomaly-score level above which the monitor
    alarms. With ``fps`` the time axis is in seconds, else in frames.
    """

    name: str
    progress: np.ndarray
    phase: np.ndarray | None = None
    true_progress: np.ndarray | None = None
    true_phase: np.ndarray | None = None
    score: np.ndarray | None = None
    alarm: np.ndarray | None = None
    anomaly_mask: np.ndarray | None = None
    threshold: float = 1.0
    phase_names: Sequence[str] = field(default_factory=list)
    fps: float | None = None

    def __post_init__(self) -> None:
        self.progress = np.asarray(self.progress, dtype=np.float64)
        n = self.progress.size
        for key in ("phase", "true_progress", "true_phase", "score", "alarm", "anomaly_mask"):
            value = getattr(self, key)
            if value is not None and np.asarray(value).size != n:
                raise ValueError(f"{self.name}: {key} has {np.asarray(value).size} frames, not {n}")

    @property
    def time(self) -> np.ndarray:
        """The x axis: seconds with ``fps``, else frame indices."""
        t = np.arange(self.progress.size, dtype=np.float64)
        return t / self.fps if self.fps else t

    @property
    def time_label(self) -> str:
        return "time (s)" if self.fps else "frame"

    @property
    def onset(self) -> int:
        """First ground-truth anomalous frame, -1 if none."""
        if self.anomaly_mask is None:
            return -1
        hits = np.flatnonzero(np.asarray(self.anomaly_mask, dtype=bool))
        return int(hits[0]) if hits.size else -1


def timeline_from_results(
    name: str,
    results: Sequence[Any],
    phase_names: Sequence[str] = (),
    *,
    true_progress: np.ndarray | None = None,
    true_phase: np.ndarray | None = None,
    anomaly_mask: np.ndarray | None = None,
    threshold: float = 1.0,
    fps: float | None = None,
) -> EpisodeTimeline:
    """An :class:`EpisodeTimeline` from the monitor's per-frame results.

    ``results`` are :class:`tcc_model.stream.FrameResult` objects (or anything with their
    ``valid``, ``progress``, ``phase_id``, ``anomaly_score`` and ``anomaly`` attributes).
    """
    return EpisodeTimeline(
        name,
        progress=np.array([r.progress if r.valid else np.nan for r in results], dtype=float),
        phase=np.array([r.phase_id if r.valid else -1 for r in results], dtype=np.int64),
        true_progress=true_progress,
        true_phase=true_phase,
        score=np.array([r.anomaly_score for r in results], dtype=float),
        alarm=np.array([bool(r.anomaly) for r in results], dtype=bool),
        anomaly_mask=anomaly_mask,
        threshold=threshold,
        phase_names=list(phase_names),
        fps=fps,
    )


def _mark_events(ax: Any, tl: EpisodeTimeline, legend: bool) -> None:
    """Shade ground-truth anomalous frames, draw the onset and a tick per alarm."""
    t = tl.time
    step = (t[1] - t[0]) if t.size > 1 else 1.0
    if tl.anomaly_mask is not None:
        mask = np.asarray(tl.anomaly_mask, dtype=bool)
        edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
        for k, (a, b) in enumerate(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))):
            label = "anomalous (truth)" if legend and k == 0 else None
            ax.axvspan(t[a] - step / 2, t[b - 1] + step / 2, color="red", alpha=0.12, label=label)
    if tl.onset >= 0:
        label = "anomaly onset" if legend else None
        ax.axvline(t[tl.onset], color="red", ls="--", lw=1.2, label=label)
    if tl.alarm is not None and np.any(tl.alarm):
        alarms = t[np.asarray(tl.alarm, dtype=bool)]
        label = "alarm" if legend else None
        ax.plot(
            alarms,
            np.full(alarms.size, 1.0),
            "|",
            color="darkred",
            ms=9,
            mew=1.5,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=label,
        )


def _phase_panel(ax: Any, tl: EpisodeTimeline) -> None:
    t = tl.time
    if tl.true_phase is not None:
        ax.step(t, tl.true_phase, where="mid", color="black", lw=2.5, alpha=0.4, label="truth")
    if tl.phase is not None:
        est = np.asarray(tl.phase, dtype=np.float64)
        est[est < 0] = np.nan
        ax.step(t, est, where="mid", color="tab:blue", lw=1.3, label="monitor")
    count = len(tl.phase_names)
    if count:
        ax.set_yticks(range(count))
        ax.set_yticklabels(tl.phase_names)
        ax.set_ylim(-0.5, count - 0.5)
    ax.set_ylabel("phase")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _score_panel(ax: Any, tl: EpisodeTimeline) -> None:
    score = np.asarray(tl.score, dtype=np.float64)
    finite = score[np.isfinite(score)]
    top = max(2.0 * tl.threshold, float(finite.max()) * 1.05 if finite.size else 0.0)
    ax.plot(tl.time, np.clip(score, 0, top), color="tab:purple", lw=1.2, label="anomaly score")
    ax.axhline(tl.threshold, color="darkred", lw=1, ls=":", label=f"threshold {tl.threshold:g}")
    ax.set_ylim(0, top)
    ax.set_ylabel("anomaly score")
    _mark_events(ax, tl, legend=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_episode_timeline(tl: EpisodeTimeline, path: str | Path, title: str | None = None) -> Path:
    """One episode in stacked panels: progress, phase (when known), anomaly score (when known)."""
    plt = pyplot()
    panels = ["progress"]
    panels += ["phase"] if tl.phase is not None or tl.true_phase is not None else []
    panels += ["score"] if tl.score is not None else []
    heights = {"progress": 2.2, "phase": 1.6, "score": 1.6}
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights[p] for p in panels) + 0.6),
        sharex=True,
        squeeze=False,
        layout="constrained",
        height_ratios=[heights[p] for p in panels],
    )
    axes = axes[:, 0]
    ax = axes[0]
    if tl.true_progress is not None:
        ax.plot(tl.time, tl.true_progress, color="black", lw=1.2, ls="--", label="truth")
    ax.plot(tl.time, tl.progress, color="tab:blue", lw=1.4, label="monitor")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("progress")
    _mark_events(ax, tl, legend=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for ax, panel in zip(axes[1:], panels[1:]):
        (_phase_panel if panel == "phase" else _score_panel)(ax, tl)
    axes[-1].set_xlabel(tl.time_label)
    fig.suptitle(title or f"episode {tl.name}")
    return save_figure(fig, path)


def plot_timeline_overview(
    timelines: Sequence[EpisodeTimeline], path: str | Path, columns: int = 4
) -> Path:
    """Progress of many episodes in a grid (truth dashed), with anomalies, onsets and alarms."""
    if not timelines:
        raise ValueError("timelines is empty; pass at least one episode")
    plt = pyplot()
    cols = min(columns, len(timelines))
    rows = math.ceil(len(timelines) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False, layout="constrained"
    )
    for i, (ax, tl) in enumerate(zip(axes.flat, timelines)):
        if tl.true_progress is not None:
            ax.plot(tl.time, tl.true_progress, color="black", lw=1, ls="--")
        ax.plot(tl.time, tl.progress, color="tab:blue", lw=1.2)
        _mark_events(ax, tl, legend=False)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(tl.name, fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("progress")
        if i >= len(timelines) - cols:
            ax.set_xlabel(tl.time_label)
    for ax in list(axes.flat)[len(timelines) :]:
        ax.axis("off")
    handles = _legend_handles(timelines)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return save_figure(fig, path)


def _legend_handles(timelines: Sequence[EpisodeTimeline]) -> list[Any]:
    """Legend entries for what the overview's panels show (one shared legend)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Line2D([], [], color="tab:blue", lw=1.2, label="monitor")]
    if any(tl.true_progress is not None for tl in timelines):
        handles.append(Line2D([], [], color="black", lw=1, ls="--", label="truth"))
    if any(tl.onset >= 0 for tl in timelines):
        handles.append(Patch(color="red", alpha=0.12, label="anomalous (truth)"))
        handles.append(Line2D([], [], color="red", ls="--", lw=1.2, label="anomaly onset"))
    if any(tl.alarm is not None and np.any(tl.alarm) for tl in timelines):
        handles.append(
            Line2D([], [], color="darkred", marker="|", ls="none", ms=9, mew=1.5, label="alarm")
        )
    return handles


def write_monitor_plots(
    timelines: Sequence[EpisodeTimeline],
    out: str | Path,
    max_timelines: int = 12,
    confusion_title: str = "monitor phase",
    deadline: float | None = None,
) -> list[str]:
    """The pictures of a monitor run into ``out``: ``progress_curves.png`` (every episode),
    ``phase_confusion.png`` (every frame with a true and an estimated phase) and
    ``timelines/<episode>.png`` (the first ``max_timelines``); returns the paths relative to
    ``out``. Per-episode timelines stop once ``time.monotonic()`` passes ``deadline``."""
    import time

    from tcc_model.visualize.metrics import plot_phase_confusion

    out = Path(out)
    if not timelines:
        return []
    written = [plot_timeline_overview(timelines, out / "progress_curves.png")]
    labelled = [tl for tl in timelines if tl.true_phase is not None and tl.phase is not None]
    if labelled and labelled[0].phase_names:
        written.append(
            plot_phase_confusion(
                np.concatenate([np.asarray(tl.true_phase) for tl in labelled]),
                np.concatenate([np.asarray(tl.phase) for tl in labelled]),
                labelled[0].phase_names,
                out / "phase_confusion.png",
                title=confusion_title,
            )
        )
    for tl in timelines[:max_timelines]:
        if deadline is not None and time.monotonic() > deadline:
            break
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tl.name)
        written.append(plot_episode_timeline(tl, out / "timelines" / f"{safe}.png"))
    return [str(Path(p).relative_to(out)) for p in written]
