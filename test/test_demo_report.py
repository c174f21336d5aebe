"""The demo report puts the shipped model beside the demo's own and checks the README's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcc_model.cli import run_main
from tcc_ros.demo_summary import (
    FRAMES_ROW,
    LATENCY_ROW,
    README_BEGIN,
    README_END,
    main,
    readme_differences,
    report_table,
    summary_rows,
)

REPO = Path(__file__).resolve().parents[1]
HEADLINE = {
    "classification_10": 0.9,
    "classification_100": 0.95,
    "few_shot_1": 0.8,
    "progression_r2": 0.7,
    "kendalls_tau": 0.6,
}


def _live(accuracy: float, caught: int) -> dict:
    return {
        "episodes": 3,
        "frames_estimated": 30,
        "frames_ground_truth": 31,
        "progress_mae": 0.05,
        "phase_accuracy": accuracy,
        "anomalies_caught": caught,
        "anomalies_missed": 1 - caught,
        "false_alarms": 0,
        "latency_ms_p50": 6.0,
        "latency_ms_p99": 20.0,
        "diagnostics": {"backend": "onnxruntime"},
    }


def _write(bundle: Path, live: Path, accuracy: float, caught: int) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    live.parent.mkdir(parents=True, exist_ok=True)
    (bundle / "bundle.yaml").write_text("verification: {max_abs_diff_embeddings: 2.0e-6}\n")
    refs = {"reference_ids": ["a", "b"], "lengths": [10, 12]}
    (bundle / "references.json").write_text(json.dumps(refs))
    live.write_text(json.dumps(_live(accuracy, caught)))


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, Path]:
    root, shipped = tmp_path / "demo", tmp_path / "models" / "sim_pouring"
    _write(root / "bundle", root / "live" / "report.json", 0.70, 0)
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text(json.dumps({"headline": HEADLINE}))
    _write(shipped, root / "shipped" / "report.json", 0.955, 1)
    card = {"metrics": {"val": dict(HEADLINE, kendalls_tau=0.99)}}
    (shipped / "model_card.json").write_text(json.dumps(card))
    return root, shipped


def test_report_shows_both_models_side_by_side(demo, capsys):
    root, shipped = demo
    assert main([str(root), "--shipped", str(shipped)]) == 0
    report = (root / "report.md").read_text()
    assert "| metric | shipped model (models/) | trained by the demo |" in report
    assert "| live: phase accuracy | 95.5% | 70.0% |" in report
    assert "| live: anomalies caught / missed / false alarms | 1 / 0 / 0 | 0 / 1 / 0 |" in report
    assert "| offline: Kendall's tau (val) | 0.990 | 0.600 |" in report
    assert "max \\|diff\\|" in report  # a pipe inside a cell is escaped for markdown
    assert "95.5% | 70.0%" in capsys.readouterr().out


def test_missing_shipped_live_run_is_named(demo, capsys):
    root, shipped = demo
    (root / "shipped" / "report.json").unlink()
    assert run_main(main, [str(root), "--shipped", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "shipped-model live run step did not finish" in err


def test_readme_check_names_rows_that_differ(demo, tmp_path, capsys):
    root, shipped = demo
    main([str(root), "--shipped", str(shipped)])
    table = [line for line in (root / "report.md").read_text().splitlines() if line[:1] == "|"]
    readme = tmp_path / "README.md"
    slower = [line.replace("6.0 / 20.0", "9.0 / 30.0") for line in table]  # latency: ignored
    frames = next(i for i, line in enumerate(slower) if FRAMES_ROW in line)
    cells = slower[frames].split(" | ")
    slower[frames] = " | ".join([cells[0], cells[1] + "9", *cells[2:]])  # timing: ignored
    assert slower[frames] != table[frames]
    readme.write_text("\n".join(["# x", README_BEGIN, *slower, README_END, ""]))
    assert readme_differences(readme, table) == []
    assert main([str(root), "--shipped", str(shipped), "--check-readme", str(readme)]) == 0
    assert "demo table matches this run" in capsys.readouterr().out
    changed = [line.replace("95.5%", "90.0%") for line in table]
    readme.write_text("\n".join([README_BEGIN, *changed, README_END]))
    assert readme_differences(readme, table) == [
        "| live: phase accuracy | 95.5% | 70.0% |",
    ]
    readme.write_text("no markers")
    assert run_main(main, [str(root), "--check-readme", str(readme)]) == 2


def test_readme_demo_table_has_the_reports_rows(demo):
    """README.md's demo table is the report's table: the same rows, in the same order."""
    root, shipped = demo
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    shown = [line.split(" | ")[0] for line in block.splitlines() if line.startswith("|")]
    ours = report_table(summary_rows(root), summary_rows(root))
    assert shown == [line.split(" | ")[0] for line in ours]
    assert any(LATENCY_ROW in line for line in ours)
