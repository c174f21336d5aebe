"""The demo's final report reads every step's output and names a missing step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcc_model.cli import run_main
from tcc_ros.demo_summary import main, summary_rows


def _write_demo(root: Path) -> None:
    (root / "eval").mkdir(parents=True)
    (root / "bundle").mkdir()
    (root / "live").mkdir()
    headline = {
        "classification_10": 0.9,
        "classification_100": 0.95,
        "few_shot_1": 0.8,
        "progression_r2": 0.7,
        "kendalls_tau": 0.6,
    }
    (root / "eval" / "metrics.json").write_text(json.dumps({"headline": headline}))
    (root / "bundle" / "bundle.yaml").write_text(
        "verification: {max_abs_diff_embeddings: 2.0e-6}\n"
    )
    (root / "bundle" / "references.json").write_text(
        json.dumps({"reference_ids": ["a", "b"], "lengths": [10, 12]})
    )
    live = {
        "episodes": 3,
        "frames_estimated": 30,
        "frames_ground_truth": 31,
        "progress_mae": 0.05,
        "phase_accuracy": 0.875,
        "anomalies_caught": 1,
        "anomalies_missed": 0,
        "false_alarms": 0,
        "latency_ms_p50": 6.0,
        "latency_ms_p99": 20.0,
        "diagnostics": {"backend": "onnxruntime"},
    }
    (root / "live" / "report.json").write_text(json.dumps(live))


def test_rows_carry_every_step(tmp_path: Path) -> None:
    _write_demo(tmp_path)
    rows = dict(summary_rows(tmp_path))
    assert rows["offline: phase classification, 10% / 100% of labels"] == "90.0% / 95.0%"
    assert rows["references: demonstrations / frames"] == "2 / 22"
    assert rows["live: phase accuracy"] == "87.5%"
    assert rows["live: anomalies caught / missed / false alarms"] == "1 / 0 / 0"
    assert rows["export: ONNX vs PyTorch max |diff|"] == "2.00e-06"
    assert main([str(tmp_path)]) == 0
    assert "87.5%" in (tmp_path / "report.md").read_text()


def test_missing_step_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_demo(tmp_path)
    (tmp_path / "live" / "report.json").unlink()
    assert run_main(main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "live run step did not finish" in err
    assert err.count("\n") == 1


def test_damaged_step_output_names_the_file(tmp_path: Path, capsys) -> None:
    _write_demo(tmp_path)
    (tmp_path / "eval" / "metrics.json").write_text('{"headline": ')
    assert run_main(main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.json: " in err and "run the demo's evaluation step again" in err
    assert "Traceback" not in err
