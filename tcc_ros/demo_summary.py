"""Final report of ``make demo``: offline evaluation, export check and the live ROS 2 run.

    python -m tcc_ros.demo_summary DEMO_DIR

Reads ``eval/metrics.json``, ``bundle/bundle.yaml``, ``bundle/references.json`` and
``live/report.json`` written by the demo's earlier steps, prints one table and writes it to
``DEMO_DIR/report.md``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.errors import UserError, wrap_errors
from tcc_model.reporting import fmt as _fmt
from tcc_model.utils import write_text_atomic


def _joined(values: list[Any], pattern: str = "{}") -> str:
    return " / ".join(_fmt(v, pattern) for v in values)


def _read(path: Path, step: str) -> Any:
    """Parse one step's JSON/YAML output; a damaged file names itself and the step."""
    import yaml

    fix = f"run the demo's {step} step again (make demo)"
    with wrap_errors(UserError, path, fix, extra=(yaml.YAMLError,)):
        text = path.read_text()
        return yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)


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
    data = {step: _read(path, step) for step, path in paths.items()}
    for step, value in data.items():
        if not isinstance(value, dict):
            raise UserError(f"{paths[step]}: expected a mapping; run the demo's {step} step again")
    head = data["evaluation"].get("headline", {})
    bundle, live, refs = data["bundle"], data["live run"], data["references"]
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


def main(argv: Sequence[str] | None = None) -> int:
    """Print the demo report and write it to ``DEMO_DIR/report.md``."""
    parser = argparse.ArgumentParser(
        prog="python -m tcc_ros.demo_summary", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("demo_dir", type=Path, help="folder of make demo's outputs (runs/demo)")
    demo_dir = parser.parse_args(argv).demo_dir
    rows = summary_rows(demo_dir)
    width = max(len(name) for name, _ in rows)
    lines = ["| metric | value |", "|---|---|", *(f"| {n} | {v} |" for n, v in rows)]
    write_text_atomic(demo_dir / "report.md", "# Demo report\n\n" + "\n".join(lines) + "\n")
    print("\n== demo report")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    from tcc_model.cli import print_written

    print_written({"report": demo_dir / "report.md"})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
