"""The reports of ``tcc_ros.evaluate_bag``: markdown summary, timelines and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    """Overview of all episodes, the phase confusion over every frame and one timeline per
    episode (at most ``max_timelines``); returns the paths relative to ``out``."""
    from tcc_model.visualize import write_monitor_plots

    return write_monitor_plots(timelines, out, max_timelines, "monitor phase, replayed")
