"""Shared state of ``benchmarks/gpu_check.py``: settings, the run context, running a CLI."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Packages a command of the check may need that the GPU machine lacks: block them in a test.
ABSENT_ON_DEVICE = ("av", "mujoco", "tensorrt", "rosbags", "crc32c", "rclpy")
_METRIC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)")


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of the check (the defaults fit one 8-minute GPU call)."""

    paper_steps: int = 300
    paper_batch: int = 2
    paper_frames: int = 20
    paper_size: int = 224
    paper_head_channels: int = 0  # 0: the paper's 512 (smaller only for the CPU test)
    paper_encoder: str = ""  # "": the config's ResNet-50 to conv4c ("light" in the CPU test)
    light_steps: int = 300
    light_batch: int = 64
    light_frames: int = 16
    resume_steps: int = 20
    torchrun_steps: int = 30
    torchrun_procs: int = 1
    compile_steps: int = 200
    workers: int = 8
    gemm_size: int = 8192
    profile_iters: int = 20
    parity_frames: int = 48
    budget_s: float = 420.0
    min_stage_s: float = 20.0
    stage_timeout_s: float = 240.0


class StageError(RuntimeError):
    """A stage failed; ``details`` go into the report next to the message."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class CliRun:
    """One finished command: exit status, wall time, output and the metrics it printed."""

    argv: list[str]
    returncode: int
    seconds: float
    output: str
    log: Path

    @property
    def metrics(self) -> dict[str, float]:
        """``key=value`` numbers of the last output line that has ``clips_per_s=``."""
        for line in reversed(self.output.splitlines()):
            if "clips_per_s=" in line:
                return {k: float(v) for k, v in _METRIC.findall(line)}
        return {}

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


@dataclass
class Check:
    """Context of one check run: settings, folders, results so far, the clock."""

    settings: Settings
    device: str
    amp: bool
    repo: Path
    data: Path
    out: Path
    work: Path
    argv: list[str]
    results: dict[str, dict] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def prepare(self) -> None:
        """Create the report folder and an empty work folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.work.exists():
            shutil.rmtree(self.work)
        (self.work / "logs").mkdir(parents=True)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def remaining(self) -> float:
        """Seconds left of the time budget."""
        return self.settings.budget_s - (time.perf_counter() - self.started)

    def say(self, message: str) -> None:
        print(f"gpu_check {time.perf_counter() - self.started:6.1f}s {message}", flush=True)

    def settings_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    def run_cli(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> CliRun:
        """Run ``python3 argv...`` from the repository root, output to ``work/logs/NAME.log``.

        Killed (with its process group) after ``stage_timeout_s`` or at the end of the budget.
        """
        timeout = max(5.0, min(self.settings.stage_timeout_s, self.remaining()))
        full = [sys.executable, *argv]
        log = self.work / "logs" / f"{name}.log"
        environ = dict(os.environ)
        environ["PYTHONUNBUFFERED"] = "1"
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.repo), environ.get("PYTHONPATH", "")) if p
        )
        environ.update(env or {})
        self.say(f"[{name}] $ python3 {' '.join(argv)}")
        tic = time.perf_counter()
        with open(log, "w") as stream:
            proc = subprocess.Popen(
                full,
                cwd=self.repo,
                env=environ,
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode = -9
                stream.write(f"\n[gpu_check] killed after {timeout:.0f} s\n")
        output = log.read_text(errors="replace")
        run = CliRun(full, returncode, time.perf_counter() - tic, output, log)
        if returncode != 0:
            what = "timed out" if returncode == -9 else f"exited with {returncode}"
            raise StageError(f"{name}: command {what}", command=" ".join(argv), tail=run.tail())
        return run
