"""The robustness benchmark's table and calibration check (``bench_robustness.py run``)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

CONTROL = "control"
COLUMNS = (
    ("tau", "Kendall's τ", "{:.3f}", 1.0),
    ("cls10", "phase cls @10%", "{:.1f}%", 100.0),
    ("r2", "progression R²", "{:.3f}", 1.0),
    ("progress_mae", "stream progress MAE", "{:.3f}", 1.0),
    ("phase_acc", "stream phase", "{:.1f}%", 100.0),
    ("false_alarms", "false alarms / 100 normal", "{:.1f}", 1.0),
)


def calibration_summary(cal: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What the monitor's thresholds were calibrated on (the stream columns depend on it)."""
    if args.monitor == "none":
        return {}
    states = cal.get("detector_states") or {}
    return {
        "source": (
            "the bundle's references.json"
            if args.monitor == "bundle"
            else f"fitted on {args.train_dataset} {args.calib_split}"
        ),
        "episodes": cal.get("num_episodes"),
        "false_alarm_rate": cal.get("false_alarm_rate", args.false_alarm_rate),
        "episodes_needed": cal.get("episodes_needed"),
        "phase_source": cal.get("phase_source"),
        "detectors_on": sorted(k for k, v in states.items() if v.get("state") == "on"),
    }


def calibration_check(
    stats: dict[str, Any], fired: dict[str, list[str]] | None = None, level: float = 0.95
) -> dict[str, Any]:
    """False alarms of the calibrated monitor on each shifted set's normal episodes.

    ``fired``: per set, the detector that raised each false alarm (counted per detector). The
    single-factor sets are pooled as ``tcc_model.reference --check-sets`` pools them
    (:func:`tcc_model.shift_check.pooled_check`).
    """
    from tcc_model.shift_check import pooled_check

    per_set = {
        name: {
            "false_alarms": int(st.stream["alarms"].sum()),
            "episodes": len(st),
            "detectors": dict(Counter((fired or {}).get(name, []))),
        }
        for name, st in stats.items()
        if st.stream
    }
    return pooled_check(per_set, level)


def calibration_line(report: dict[str, Any]) -> str:
    """One line: the calibration and its false alarms on every shifted set."""
    from tcc_model.shift_check import check_line

    cal = report["calibration"]
    return (
        f"{report['bundle']}: calibration ({cal['source']}, {cal['episodes']} normal episodes, "
        f"rate {cal['false_alarm_rate']}): {check_line(report['calibration_check'])}"
    )


def markdown(report: dict[str, Any]) -> str:
    """The table: control values, then each shift's value and paired difference ± SE."""
    cols = [c for c in COLUMNS if c[0] in report["rows"][CONTROL]]
    lines = [
        "| test episodes | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, row in report["rows"].items():
        cells = []
        for key, _, fmt, scale in cols:
            cell = row[key]
            text = fmt.format(scale * cell["value"])
            if "diff" in cell:
                sign = "+" if cell["diff"] >= 0 else "−"
                diff = fmt.format(scale * abs(cell["diff"])).rstrip("%")
                se = fmt.format(scale * cell["se"]).rstrip("%")
                text += f" ({sign}{diff} ± {se})"
            cells.append(text)
        label = f"{name} ({report['episodes'][name]})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def versus(
    first: dict[str, Any], other: dict[str, Any], resamples: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per set and metric: ``other`` minus ``first`` on the same episodes, with the paired SE."""
    from tcc_model import robustness as rb

    return {
        name: {
            key: {"diff": d["diff"], "se": d["se"]}
            for key, d in rb.paired_differences(first[name], other[name], resamples, seed).items()
        }
        for name in first
        if name in other
    }


def markdown_versus(rows: dict[str, dict[str, dict[str, float]]], episodes: dict) -> str:
    """The table of :func:`versus`: signed difference ± SE per set and metric."""
    cols = [c for c in COLUMNS if c[0] in next(iter(rows.values()))]
    lines = [
        "| test episodes | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, row in rows.items():
        cells = []
        for key, _, fmt, scale in cols:
            sign = "+" if row[key]["diff"] >= 0 else "−"
            diff = fmt.format(scale * abs(row[key]["diff"])).rstrip("%")
            se = fmt.format(scale * row[key]["se"]).rstrip("%")
            cells.append(f"{sign}{diff} ± {se}")
        lines.append(f"| {name} ({episodes[name]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
