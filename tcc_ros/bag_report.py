"""The reports of ``tcc_ros.evaluate_bag``: markdown summary, timelines and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.reporting import fmt

#: Per-episode timeline PNGs written at most (the overview shows every episode).
DEFAULT_MAX_TIMELINES = 12


def markdown(report: dict[str, Any]) -> str:
    """Human-readable summary of an evaluation report."""
    lines = ["# Bag evaluation", ""]
    lines.append(f"Bags: {', '.join(report['bags'])}  ")
    lines.append(f"Bundle: {report['bundle']} (backend {report['backend']})  ")
    lines.append(f"Episodes: {report['config']['episodes']}  ")
    t = report["throughput"]
    lines.append(
        f"Frames: {t['frames']} ({t['rejected_frames']} rejected), "
        f"{fmt(t['frames_per_s'], '{:.1f}')} frames/s end to end (read + decode + embed)"
    )
    tau = fmt(report["kendalls_tau"])
    if report.get("kendalls_tau_skipped"):
        tau += f" ({report['kendalls_tau_skipped']})"
    lines += ["", f"Kendall's tau over ordered episode pairs: {tau}", ""]
    lines += ["| episode | frames | tau vs reference |", "|---|---|---|"]
    lines += [
        f"| {e['name']} | {e['frames']} | {fmt(e['tau_vs_reference'])} |"
        for e in report["episodes"]
    ]
    for key, title in (
        ("replayed_monitor", "Monitor replayed offline"),
        ("recorded_monitor", "Monitor outputs recorded in the bag"),
    ):
        if key in report:
            s = report[key]["summary"]
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in s.items()]
    if "monitor_skipped" in report:
        lines += ["", f"Monitor accuracy skipped: {report['monitor_skipped']}"]
    if report.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in report["plots"])]
    return "\n".join(lines) + "\n"


def write_plots(
    timelines: Sequence[Any], out: Path, max_timelines: int = DEFAULT_MAX_TIMELINES
) -> list[str]:
    """Overview of all episodes, one timeline per episode (at most ``max_timelines``) and the
    phase confusion over every frame; returns the paths relative to ``out``."""
    from tcc_model.visualize import (
        plot_episode_timeline,
        plot_phase_confusion,
        plot_timeline_overview,
    )

    if not timelines:
        return []
    written = [plot_timeline_overview(timelines, out / "progress_curves.png")]
    for tl in timelines[:max_timelines]:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tl.name)
        written.append(plot_episode_timeline(tl, out / "timelines" / f"{safe}.png"))
    labelled = [tl for tl in timelines if tl.true_phase is not None and tl.phase is not None]
    if labelled and labelled[0].phase_names:
        written.append(
            plot_phase_confusion(
                np.concatenate([tl.true_phase for tl in labelled]),
                np.concatenate([tl.phase for tl in labelled]),
                labelled[0].phase_names,
                out / "phase_confusion.png",
                title="monitor phase, replayed",
            )
        )
    return [str(Path(p).relative_to(out)) for p in written]
