"""The live report of :mod:`tcc_ros.console`: monitor outputs against the demo camera's truth.

:class:`LiveReport` keys every monitor output and ground-truth message by its image stamp (pure
Python, no ROS); :meth:`LiveReport.report` scores the episodes with
:mod:`tcc_model.monitor_metrics`, :meth:`LiveReport.timelines` gives their
:class:`~tcc_model.visualize.EpisodeTimeline`; :func:`format_report` prints the table and
:func:`write_report` writes the JSON and the pictures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcc_model.monitor_metrics import score_episode, summarize

if TYPE_CHECKING:
    from tcc_model.visualize import EpisodeTimeline


@dataclass
class _Truth:
    episode: str
    frame_index: int
    phase_id: int
    progress: float
    anomaly: bool
    anomaly_kind: str


@dataclass
class LiveReport:
    """Accumulates monitor outputs and ground truth keyed by image stamp (ns); pure Python."""

    truth: dict[int, _Truth] = field(default_factory=dict)
    progress: dict[int, float] = field(default_factory=dict)
    phase: dict[int, int] = field(default_factory=dict)
    anomaly: dict[int, bool] = field(default_factory=dict)
    anomaly_score: dict[int, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)
    rates_hz: list[tuple[float, float]] = field(default_factory=list)  # (input, processed)
    phase_names: list[str] = field(default_factory=list)  # from the monitor's info topic
    threshold: float = 1.0  # anomaly score above which the monitor flags a frame

    def add_diagnostics(self, values: dict[str, str]) -> None:
        """Keep the latest diagnostics; rates only while frames were flowing (input > 0)."""
        self.diagnostics = dict(values)
        try:
            rates = (float(values["input_rate_hz"]), float(values["processed_rate_hz"]))
        except (KeyError, ValueError):
            return
        if rates[0] > 0 and len(self.rates_hz) < 100_000:
            self.rates_hz.append(rates)

    def add_truth(
        self,
        stamp_ns: int,
        episode: str,
        frame_index: int,
        phase_id: int,
        progress: float,
        anomaly: bool,
        anomaly_kind: str,
    ) -> None:
        self.truth[stamp_ns] = _Truth(
            episode, frame_index, phase_id, progress, anomaly, anomaly_kind
        )

    def add_progress(self, stamp_ns: int, progress: float) -> None:
        self.progress[stamp_ns] = progress

    def add_phase(self, stamp_ns: int, phase_id: int, received_ns: int) -> None:
        self.phase[stamp_ns] = phase_id
        self.latencies_ms.append((received_ns - stamp_ns) * 1e-6)

    def add_anomaly(self, stamp_ns: int, anomaly: bool, score: float = math.nan) -> None:
        self.anomaly[stamp_ns] = anomaly
        self.anomaly_score[stamp_ns] = score

    def _episodes(self) -> list[list[int]]:
        """Ground-truth stamps grouped into episode runs, in stamp order.

        A run ends when the episode name changes or its frame index goes back (a looping camera
        replays the same episode).
        """
        runs: list[list[int]] = []
        previous: _Truth | None = None
        for stamp in sorted(self.truth):
            t = self.truth[stamp]
            if (
                previous is None
                or t.episode != previous.episode
                or t.frame_index <= previous.frame_index
            ):
                runs.append([])
            runs[-1].append(stamp)
            previous = t
        return runs

    def report(self) -> dict[str, Any]:
        """Metrics over everything received so far (NaN where there is nothing to measure).

        Each episode is scored with :func:`tcc_model.monitor_metrics.score_episode` (frames the
        monitor published no progress for are left out of the progress and phase scores) and the
        episodes are aggregated with :func:`tcc_model.monitor_metrics.summarize`.
        """
        scores = []
        for stamps in self._episodes():
            truth = [self.truth[s] for s in stamps]
            scores.append(
                score_episode(
                    truth[0].episode,
                    pred_progress=[self.progress.get(s, math.nan) for s in stamps],
                    pred_phase=[self.phase.get(s, -1) for s in stamps],
                    pred_alarm=[self.anomaly.get(s, False) for s in stamps],
                    pred_score=[self.anomaly_score.get(s, math.nan) for s in stamps],
                    gt_progress=[t.progress for t in truth],
                    gt_phase=[t.phase_id for t in truth],
                    gt_anomaly_mask=[t.anomaly for t in truth],
                    anomalous=bool(truth[0].anomaly_kind),
                )
            )
        summary = summarize(scores)
        estimated = sum(s in self.truth for s in self.phase)
        lat = np.array(self.latencies_ms, float)
        rates = np.array(self.rates_hz, float).reshape(-1, 2)
        return {
            "episodes": len(scores),
            "frames_ground_truth": len(self.truth),
            "frames_estimated": estimated,
            "processed_fraction": estimated / len(self.truth) if self.truth else math.nan,
            "progress_mae": summary.get("progress_mae", math.nan),
            "phase_accuracy": summary.get("phase_accuracy", math.nan),
            "anomalies_caught": summary.get("anomalies_caught", 0),
            "anomalies_missed": summary.get("anomalies_missed", 0),
            "false_alarms": summary.get("false_alarm_episodes", 0),
            "detection_delay_frames_median": summary.get("median_detection_delay", math.nan),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else math.nan,
            "latency_samples": int(lat.size),
            "input_rate_hz": float(np.median(rates[:, 0])) if rates.size else math.nan,
            "processed_rate_hz": float(np.median(rates[:, 1])) if rates.size else math.nan,
            "diagnostics": dict(self.diagnostics),
        }

    def timelines(self) -> list[EpisodeTimeline]:
        """One timeline per episode run (as :meth:`report` scores them), in stamp order.

        Frames the monitor published nothing for have NaN progress and score and phase -1; a
        replayed episode is named ``<episode> (run N)`` from its second run on.
        """
        from tcc_model.visualize import EpisodeTimeline

        timelines: list[EpisodeTimeline] = []
        runs_of: dict[str, int] = {}
        for stamps in self._episodes():
            truth = [self.truth[s] for s in stamps]
            name = truth[0].episode
            runs_of[name] = runs_of.get(name, 0) + 1
            true_phase = np.array([t.phase_id for t in truth], dtype=np.int64)
            timelines.append(
                EpisodeTimeline(
                    name if runs_of[name] == 1 else f"{name} (run {runs_of[name]})",
                    progress=np.array([self.progress.get(s, math.nan) for s in stamps]),
                    phase=np.array([self.phase.get(s, -1) for s in stamps], dtype=np.int64),
                    true_progress=np.array([t.progress for t in truth]),
                    true_phase=true_phase if (true_phase >= 0).any() else None,
                    score=np.array([self.anomaly_score.get(s, math.nan) for s in stamps]),
                    alarm=np.array([self.anomaly.get(s, False) for s in stamps], dtype=bool),
                    anomaly_mask=np.array([t.anomaly for t in truth], dtype=bool),
                    threshold=self.threshold,
                    phase_names=list(self.phase_names),
                )
            )
        return timelines


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "n/a"


def format_report(report: dict[str, Any]) -> str:
    """Markdown table of a :meth:`LiveReport.report` dict (a line instead when it is empty)."""
    if not report["frames_estimated"] and not report["latency_samples"]:
        return "no monitor outputs received: no report (is the monitor running?)"
    rows = [
        ("episodes", f"{report['episodes']}"),
        (
            "frames estimated / ground truth",
            f"{report['frames_estimated']} / {report['frames_ground_truth']}",
        ),
        ("progress MAE", f"{report['progress_mae']:.3f}"),
        ("phase accuracy", _percent(report["phase_accuracy"])),
        (
            "anomalies caught / missed / false alarms",
            " / ".join(
                str(report[k]) for k in ("anomalies_caught", "anomalies_missed", "false_alarms")
            ),
        ),
        ("detection delay (median, frames)", f"{report['detection_delay_frames_median']:.1f}"),
        (
            "latency p50 / p99 (ms)",
            f"{report['latency_ms_p50']:.1f} / {report['latency_ms_p99']:.1f}",
        ),
        (
            "input / processed rate (Hz, median while streaming)",
            f"{report['input_rate_hz']:.2f} / {report['processed_rate_hz']:.2f}",
        ),
    ]
    diag = report.get("diagnostics") or {}
    if diag:
        rows.append(
            (
                "dropped / rejected frames (monitor)",
                f"{diag.get('frames_dropped', '?')} / {diag.get('frames_rejected', '?')}",
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def write_report(
    report: dict[str, Any],
    timelines: Sequence[EpisodeTimeline],
    path: Path,
    max_timelines: int = 12,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Write the report as strict JSON, then its pictures beside it, then the report again
    listing them (``plots``), so a console stopped while drawing still leaves its numbers.

    ``seconds`` bounds the drawing: per-episode timelines stop after it (the overview and the
    confusion matrix come first; ``timelines_not_drawn`` counts those left out). Without
    matplotlib the report is written without pictures and a warning says why. Prints the
    closing ``wrote:`` line; returns the report as written.
    """
    import importlib.util
    import sys
    import time

    from tcc_model.cli import print_written
    from tcc_model.reporting import strict_json
    from tcc_model.utils import write_text_atomic
    from tcc_model.visualize import write_monitor_plots

    report = {**report, "plots": []}
    write_text_atomic(path, strict_json(report))
    plots: list[str] = []
    if importlib.util.find_spec("matplotlib") is None:  # a ROS environment without it
        print("warning: matplotlib is not installed: no pictures of the live run", file=sys.stderr)
    else:
        deadline = None if seconds is None else time.monotonic() + seconds
        title = "monitor phase, live"
        plots = write_monitor_plots(timelines, path.parent, max_timelines, title, deadline)
        drawn = sum(p.startswith("timelines/") for p in plots)
        report["plots"] = plots
        report["timelines_not_drawn"] = min(len(timelines), max_timelines) - drawn
        write_text_atomic(path, strict_json(report))
    print_written({"report": path, **{Path(p).stem: path.parent / p for p in plots}})
    return report
