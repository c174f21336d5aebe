"""Final report of ``make demo``: offline evaluation, export check and the live ROS 2 run.

    python -m tcc_ros.demo_summary DEMO_DIR

Reads ``eval/metrics.json``, ``bundle/bundle.yaml``, ``bundle/references.json`` and
``live/report.json`` written by the demo's earlier steps, prints one table and writes it to
``DEMO_DIR/report.md``. With ``--shipped models/sim_pouring`` the shipped model's column (its
model card and ``DEMO_DIR/shipped/report.json``, its live run) stands beside the demo's own;
``--check-readme README.md`` says whether the README's demo table shows this run.
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

LATENCY_ROW = "live: end-to-end latency p50 / p99 (ms)"
FRAMES_ROW = "live: episodes / frames processed / frames sent"
#: Rows that depend on the machine and its load, not on the models: not compared with README.
TIMING_ROWS = (LATENCY_ROW, FRAMES_ROW)
#: README.md shows the demo's table between these markers (compared by ``--check-readme``)
README_BEGIN, README_END = "<!-- demo-report:begin -->", "<!-- demo-report:end -->"
NOTE = (
    "Shipped model ({shipped}): offline rows from its model card (its own val split), live rows"
    " on {demo}/unseen, episodes simulated for the demo that it never saw. Trained by the demo:"
    " offline rows on {demo}/data's val split, live rows on its test split."
)


def _joined(values: list[Any], pattern: str = "{}") -> str:
    return " / ".join(_fmt(v, pattern) for v in values)


def _read(path: Path, step: str) -> Any:
    """Parse one step's JSON/YAML output; a damaged file names itself and the step."""
    import yaml

    fix = f"run the demo's {step} step again (make demo)"
    with wrap_errors(UserError, path, fix, extra=(yaml.YAMLError,)):
        text = path.read_text()
        return yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)


def _step_data(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Every step's parsed output; a missing file raises FileNotFoundError naming the step."""
    for step, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the demo's {step} step did not finish")
    data = {step: _read(path, step) for step, path in paths.items()}
    for step, value in data.items():
        if not isinstance(value, dict):
            raise UserError(f"{paths[step]}: expected a mapping; run the demo's {step} step again")
    return data


def _rows(head: dict, bundle: dict, refs: dict, live: dict) -> list[tuple[str, str]]:
    """``(metric, value)`` rows from one model's evaluation headline, bundle and live run."""
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
            LATENCY_ROW,
            _joined([live.get("latency_ms_p50"), live.get("latency_ms_p99")], "{:.1f}"),
        ),
        ("live: backend", str(live.get("diagnostics", {}).get("backend", "n/a"))),
    ]


def summary_rows(demo_dir: Path) -> list[tuple[str, str]]:
    """``(metric, value)`` rows of the model the demo trained; a missing step raises."""
    data = _step_data(
        {
            "evaluation": demo_dir / "eval" / "metrics.json",
            "bundle": demo_dir / "bundle" / "bundle.yaml",
            "references": demo_dir / "bundle" / "references.json",
            "live run": demo_dir / "live" / "report.json",
        }
    )
    head = data["evaluation"].get("headline", {})
    return _rows(head, data["bundle"], data["references"], data["live run"])


def shipped_rows(demo_dir: Path, shipped: Path) -> list[tuple[str, str]]:
    """The same rows for the shipped bundle: offline metrics from its model card (its own val
    split), live ones from ``demo_dir/shipped/report.json`` (episodes it never saw)."""
    data = _step_data(
        {
            "model card": shipped / "model_card.json",
            "bundle": shipped / "bundle.yaml",
            "references": shipped / "references.json",
            "shipped-model live run": demo_dir / "shipped" / "report.json",
        }
    )
    head = data["model card"].get("metrics", {}).get("val", {})
    return _rows(head, data["bundle"], data["references"], data["shipped-model live run"])


def report_table(rows: list[tuple[str, str]], shipped: list[tuple[str, str]] | None) -> list[str]:
    """The report's markdown table: one value column, or the shipped model's beside it."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    if shipped is None:
        return ["| metric | value |", "|---|---|", *(f"| {cell(n)} | {v} |" for n, v in rows)]
    lines = ["| metric | shipped model (models/) | trained by the demo |", "|---|---|---|"]
    return lines + [f"| {cell(n)} | {s} | {v} |" for (n, v), (_, s) in zip(rows, shipped)]


def readme_differences(readme: Path, table: list[str]) -> list[str]:
    """Rows of ``table`` that README's demo-report block does not show (:data:`TIMING_ROWS`
    excluded: latency, and the frames a loaded machine's monitor misses at episode starts,
    depend on the machine). Raises UserError when the block is missing."""
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise UserError(f"{readme}: no {README_BEGIN} ... {README_END} block for the demo table")
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    shown = {line.strip() for line in block.splitlines() if line.startswith("|")}
    return [
        line
        for line in table
        if not any(row in line for row in TIMING_ROWS) and line.strip() not in shown
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the demo report, write it to ``DEMO_DIR/report.md``, compare it with the README."""
    parser = argparse.ArgumentParser(
        prog="python -m tcc_ros.demo_summary", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("demo_dir", type=Path, help="folder of make demo's outputs (runs/demo)")
    parser.add_argument(
        "--shipped", type=Path, default=None, help="the shipped bundle (models/sim_pouring)"
    )
    parser.add_argument(
        "--check-readme", type=Path, default=None, help="README.md to compare the table with"
    )
    args = parser.parse_args(argv)
    demo_dir = args.demo_dir
    rows = summary_rows(demo_dir)
    shipped = None if args.shipped is None else shipped_rows(demo_dir, args.shipped)
    table = report_table(rows, shipped)
    notes = [] if shipped is None else [NOTE.format(shipped=args.shipped, demo=demo_dir)]
    text = "\n".join(["# Demo report", "", *table, "", *notes])
    write_text_atomic(demo_dir / "report.md", text.rstrip("\n") + "\n")
    width = max(len(name) for name, _ in rows)
    print("\n== demo report" + ("" if shipped is None else ": shipped model | trained by the demo"))
    for i, (name, value) in enumerate(rows):
        print(f"  {name.ljust(width)}  " + (f"{shipped[i][1]} | " if shipped else "") + value)
    if args.check_readme is not None:
        missing = readme_differences(args.check_readme, table)
        if missing:
            print(
                f"note: {args.check_readme}'s demo table differs from this run in "
                f"{len(missing)} row(s), e.g. {missing[0]!r}; copy the table of "
                f"{demo_dir / 'report.md'} between its demo-report markers"
            )
        else:
            print(f"{args.check_readme}'s demo table matches this run (latency aside)")
    from tcc_model.cli import print_written

    print_written({"report": demo_dir / "report.md"})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
