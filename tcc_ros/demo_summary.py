"""Final report of ``make demo``: offline evaluation, export check and the live ROS 2 run.

    python -m tcc_ros.demo_summary DEMO_DIR

Reads ``eval/metrics.json``, ``bundle/bundle.yaml``, ``bundle/references.json`` and
``live/report.json`` written by the demo's earlier steps, prints one table and writes it to
``DEMO_DIR/report.md``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from tcc_model.utils import write_text_atomic


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value) if isinstance(value, int | float) else str(value)


def _joined(values: list[Any], pattern: str = "{}") -> str:
    return " / ".join(_fmt(v, pattern) for v in values)


def summary_rows(demo_dir: Path) -> list[tuple[str, str]]:
    """``(metric, value)`` rows of the report; a missing step's file raises FileNotFoundError."""
    paths = {
        "evaluation": demo_dir / "eval" / "metrics.json",
        "bundle": demo_dir / "bundle" / "bundle.yaml",
        "references": demo_dir / "bundle" / "references.json",
        "live run": demo_dir / "live" / "report.json",
    }
    for step, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the demo's {step} step did not finish")
    head = json.loads(paths["evaluation"].read_text())["headline"]
    bundle = yaml.safe_load(paths["bundle"].read_text())
    live = json.loads(paths["live run"].read_text())
    refs = json.loads(paths["references"].read_text())
    parity = bundle.get("verification", {}).get("max_abs_diff_embeddings")
    pct = "{:.1%}"
    return [
        (
            "offline: phase classification, 10% / 100% of labels",
            _joined([head.get("classification_10"), head.get("classification_100")], pct),
        ),
        ("offline: few-shot, 1 labelled video", _fmt(head.get("few_shot_1"), pct)),
        ("offline: phase progression R²", _fmt(head.get("progression_r2"))),
        ("offline: Kendall's tau (val)", _fmt(head.get("kendalls_tau"))),
        ("export: ONNX vs PyTorch max |diff|", _fmt(parity, "{:.2e}")),
        (
            "references: demonstrations / frames",
            _joined([len(refs.get("reference_ids", [])), sum(refs.get("lengths", []) or [0])]),
        ),
        (
            "live: episodes / frames processed / frames sent",
            _joined([live.get(k) for k in ("episodes", "frames_estimated", "frames_ground_truth")]),
        ),
        ("live: progress MAE", _fmt(live.get("progress_mae"))),
        ("live: phase accuracy", _fmt(live.get("phase_accuracy"), pct)),
        (
            "live: anomalies caught / missed / false alarms",
            _joined(
                [live.get(k) for k in ("anomalies_caught", "anomalies_missed", "false_alarms")]
            ),
        ),
        (
            "live: end-to-end latency p50 / p99 (ms)",
            _joined([live.get("latency_ms_p50"), live.get("latency_ms_p99")], "{:.1f}"),
        ),
        ("live: backend", str(live.get("diagnostics", {}).get("backend", "n/a"))),
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tcc_ros.demo_summary DEMO_DIR", file=sys.stderr)
        return 2
    demo_dir = Path(args[0])
    try:
        rows = summary_rows(demo_dir)
    except (FileNotFoundError, json.JSONDecodeError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    width = max(len(name) for name, _ in rows)
    lines = ["| metric | value |", "|---|---|", *(f"| {n} | {v} |" for n, v in rows)]
    write_text_atomic(demo_dir / "report.md", "# Demo report\n\n" + "\n".join(lines) + "\n")
    print("\n== demo report (" + str(demo_dir / "report.md") + ")")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
