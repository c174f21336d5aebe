"""The one-command GPU check (benchmarks/gpu_check.py) runs end to end on the CPU at tiny sizes.

The run blocks the packages the GPU machine lacks (PyAV, MuJoCo, TensorRT, rosbags, crc32c,
rclpy), so it also shows that training on frame folders, export and parity need none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_check_common import ABSENT_ON_DEVICE, CliRun  # noqa: E402

# torch.compile on the CPU builds C++ for minutes: those stages run on the GPU machine only.
CPU_STAGES = "env,gemm_peak,paper_train,light_train,export,parity,resume,torchrun,profile"


def _blocker(folder: Path) -> Path:
    """A folder that shadows the packages absent on the GPU machine with failing imports."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ABSENT_ON_DEVICE:
        (folder / f"{name}.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return folder


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_blocker(tmp / "blocked")), str(REPO)])
    env.setdefault("OMP_NUM_THREADS", "2")
    out = tmp / "out"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)]
    cmd += ["--work", str(tmp / "work"), *args]
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "gpu_check.json").read_text())
    return done, report


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    tmp = tmp_path_factory.mktemp("gpu_check")
    done, report = _run(tmp, "--stages", CPU_STAGES)
    return done, report, tmp / "out"


@pytest.mark.slow
def test_every_stage_passes_on_cpu(quick_run) -> None:
    done, report, _ = quick_run
    failed = {k: v.get("error") for k, v in report["stages"].items() if v["status"] != "ok"}
    assert done.returncode == 0 and not failed, (failed, done.stdout[-3000:])
    assert list(report["stages"]) == CPU_STAGES.split(",")
    # the blocked packages were really absent, so nothing here needed them
    assert set(report["stages"]["env"]["absent"]) == set(ABSENT_ON_DEVICE)


@pytest.mark.slow
def test_report_has_the_measurements(quick_run) -> None:
    _, report, out = quick_run
    s, stages = report["summary"], report["stages"]
    assert s["bf16_peak_tflops"] > 0 and s["paper_clips_per_s"] > 0 and s["light_clips_per_s"] > 0
    flops = stages["profile"]["paper_flops_per_clip"]
    expected = s["paper_clips_per_s"] * flops / 1e12 / s["bf16_peak_tflops"]
    assert s["paper_train_peak_fraction"] == pytest.approx(expected, rel=2e-3)
    assert stages["profile"]["profile_table"].strip()
    # the CUDA-trained (here: CPU-trained) checkpoint became a bundle whose ONNX graphs agree
    assert stages["export"]["verification"]["max_abs_diff_embeddings"] >= 0
    assert stages["parity"]["onnxruntime_vs_torch_cpu_rel"] <= 1e-3
    # a run stopped halfway and resumed ends where the straight run ends, bit for bit on a CPU
    assert stages["resume"]["light"]["bit_identical"] is True
    assert stages["torchrun"]["ddp_used"] in (True, False)
    text = (out / "gpu_check.md").read_text()
    for name in CPU_STAGES.split(","):
        assert f"| {name} | ok |" in text


@pytest.mark.slow
def test_failed_stage_is_recorded_and_later_stages_run(tmp_path) -> None:
    done, report = _run(tmp_path, "--stages", "light_train,gemm_peak", "--data", "/nonexistent")
    assert done.returncode == 1
    stages = report["stages"]
    assert stages["light_train"]["status"] == "failed"
    assert "/nonexistent" in stages["light_train"]["tail"]
    assert stages["gemm_peak"]["status"] == "ok"
    assert report["summary"]["stages_failed"] == ["light_train"]


def test_stages_past_the_budget_are_skipped(tmp_path, monkeypatch) -> None:
    import gpu_check

    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "w")]
    status = gpu_check.main([*argv, "--budget-s", "0", "--stages", "paper_train,export"])
    report = json.loads((out / "gpu_check.json").read_text())
    assert status == 0
    assert {v["status"] for v in report["stages"].values()} == {"skipped"}
    assert "skipped" in (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_without_cuda_the_gpu_stages_are_skipped_and_the_report_kept(tmp_path) -> None:
    import gpu_check
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    argv = ["--device", "cuda", "--out", str(out), "--work", str(tmp_path / "w")]
    status = gpu_check.main([*argv, "--stages", "env,gemm_peak,paper_train"])
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert status == 1 and stages["env"]["status"] == "failed"
    assert "no CUDA device" in stages["env"]["error"] and stages["env"]["torch"]
    assert [stages[n]["status"] for n in ("gemm_peak", "paper_train")] == ["skipped"] * 2


def test_unknown_stage_is_one_error_line(capsys) -> None:
    import gpu_check

    with pytest.raises(SystemExit) as info:
        gpu_check.main(["--device", "cpu", "--stages", "paper_train,warp_drive"])
    assert "warp_drive" in str(info.value) and str(info.value).startswith("error:")


def test_training_metrics_are_read_from_the_last_summary_line(tmp_path) -> None:
    output = "step 3: val kendalls_tau 0.1\nloss=0.98 tcc=0.9 clips_per_s=12.5 val_loss=1e-3\n"
    run = CliRun(["x"], 0, 1.0, output, tmp_path / "log")
    assert run.metrics == {"loss": 0.98, "tcc": 0.9, "clips_per_s": 12.5, "val_loss": 1e-3}
    assert CliRun(["x"], 0, 1.0, "no metrics\n", tmp_path / "log").metrics == {}
