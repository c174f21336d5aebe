"""Where a training run came from: command line, code commit, machine (``OUT/provenance.json``).

A model card quotes these; each launch of a run (the first and every ``--resume``) adds one entry.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": tracked files changed since it (None: unknown)}``."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's), if known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def launch_record(argv: Sequence[str], threads: int) -> dict[str, Any]:
    """One launch: the exact command, the commit, the machine and the thread count."""
    import torch

    return {
        "command": shlex.join(["python", "-m", "tcc_model.train", *argv]),
        **git_state(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": threads,
    }


def record_launch(out_dir: Path, argv: Sequence[str], threads: int) -> Path:
    """Append this launch to ``out_dir/provenance.json``; returns its path."""
    from tcc_model.utils import write_text_atomic

    path = out_dir / "provenance.json"
    launches: list[Any] = []
    if path.is_file():
        try:
            launches = list(json.loads(path.read_text()).get("launches", []))
        except (ValueError, AttributeError, TypeError):
            launches = []  # a damaged record is replaced, never fatal for training
    launches.append(launch_record(argv, threads))
    write_text_atomic(path, json.dumps({"launches": launches}, indent=1) + "\n")
    return path
