"""Start the progress monitor without ``ros2 launch``: the same nodes as the launch file.

Each node runs as its own process (exactly what ``launch/progress_monitor.launch.py`` wires):
the monitor node with the parameter file, an optional demo camera (dataset replay or live
simulator, with ground truth) and the console view, which prints phase/progress/anomaly events and
a final report. SIGINT/SIGTERM are forwarded to the children. The exit status is non-zero when the
monitor (or the camera) fails.

Example::

    python -m tcc_ros.monitor --params config/progress_monitor.yaml --bundle bundles/light \
        --with-demo-camera --demo-dataset sim_pouring --demo-episodes 4 --report report.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.cli import EXIT_USER_ERROR
from tcc_model.errors import ConfigError
from tcc_ros.camera_source import ANOMALY_KINDS
from tcc_ros.launch_wiring import (
    NodeSpec,
    command_line,
    default_params_file,
    exit_problem,
    plan,
    read_node_parameters,
)

__all__ = ["build_commands", "main", "parse_args", "read_node_parameters", "run"]


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The launch arguments (``launch_wiring.LAUNCH_ARGUMENTS``) the command line gives."""
    given = {
        "params_file": str(args.params) if args.params else "",
        "bundle": args.bundle or "",
        "namespace": args.namespace,
        "image_topic": args.image_topic or "",
        "compressed": args.compressed or "",
        "use_console": "false" if args.no_console else "true",
        "report": str(args.report) if args.report else "",
        "use_demo_camera": "true" if args.with_demo_camera else "false",
        "demo_dataset": args.demo_dataset,
        "demo_split": args.demo_split,
        "demo_episodes": str(args.demo_episodes or ""),
        "demo_rate": str(args.demo_rate),
    }
    return given


def _camera_extras(spec: NodeSpec, args: argparse.Namespace) -> None:
    """Options only this launcher offers: the live simulator and a frame size."""
    if args.demo_sim:
        argv = spec.arguments
        for flag in ("--dataset", "--split"):
            i = argv.index(flag)
            del argv[i : i + 2]
        if "--episodes" not in argv:
            argv += ["--episodes", "1"]
        argv += ["--sim", "--seed", str(args.demo_seed)]
        if args.demo_anomaly:
            argv += ["--anomaly", args.demo_anomaly]
    if args.demo_size:
        spec.arguments += ["--size", str(args.demo_size)]


def build_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Command lines of the child processes, keyed by role (monitor, console, camera)."""
    commands = {}
    for spec in plan(launch_arguments(args)):
        if spec.role == "camera":
            _camera_extras(spec, args)
        commands[spec.role] = command_line(spec, sys.executable)
    return commands


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tcc_ros.monitor", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--params",
        default=None,
        type=Path,
        help=f"ROS 2 parameter file (default {default_params_file()})",
    )
    p.add_argument("--bundle", default=None, help="bundle directory (overrides the params file)")
    p.add_argument("--image-topic", default=None, help="overrides image_topic of the params file")
    p.add_argument(
        "--compressed",
        default=None,
        choices=["true", "false"],
        help="overrides compressed of the params file",
    )
    p.add_argument(
        "--namespace",
        default="tcc",
        help="namespace of the nodes: outputs come out as /NAMESPACE/progress, ... (default tcc)",
    )
    p.add_argument(
        "--with-demo-camera",
        action="store_true",
        help="also start a camera replaying a dataset (or the simulator)",
    )
    p.add_argument("--demo-dataset", default="sim_pouring")
    p.add_argument("--demo-split", default="test")
    p.add_argument("--demo-episodes", type=int, default=None)
    p.add_argument("--demo-sim", action="store_true", help="render episodes live instead")
    p.add_argument(
        "--demo-anomaly",
        default=None,
        choices=ANOMALY_KINDS,
        help="simulated anomaly (with --demo-sim)",
    )
    p.add_argument("--demo-seed", type=int, default=1000)
    p.add_argument("--demo-rate", type=float, default=12.0, help="camera fps (default 12)")
    p.add_argument("--demo-size", type=int, default=None, help="camera frame size")
    p.add_argument("--report", type=Path, default=None, help="write the final report as JSON")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after S seconds (default: at the end of the demo stream, or never)",
    )
    p.add_argument(
        "--drain",
        type=float,
        default=5.0,
        help="seconds to wait for the last outputs after the camera ends (default 5)",
    )
    p.add_argument("--no-console", action="store_true", help="do not start the console view")
    args = p.parse_args(list(argv))
    if args.duration is not None and args.duration <= 0:
        p.error(f"--duration must be > 0, got {args.duration}")
    return args


def _terminate(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run(args: argparse.Namespace) -> int:
    """Start the children, supervise them, stop them in order; returns the exit status."""
    params = read_node_parameters(args.params or default_params_file())
    if not (args.bundle or params.get("bundle")):
        raise ConfigError("no bundle: pass --bundle DIR or set bundle in the params file")
    commands = build_commands(args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stop_requested = False

    def request_stop(*_: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: dict[str, subprocess.Popen] = {}
    status = 0
    try:
        for role in ("monitor", "console", "camera"):  # outputs' listeners before the source
            if role in commands:
                procs[role] = subprocess.Popen(commands[role], env=env)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop_requested and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
            monitor_rc = procs["monitor"].poll()
            if monitor_rc is not None:
                problem = exit_problem("monitor", monitor_rc)
                if problem and monitor_rc != EXIT_USER_ERROR:  # a user error printed its own line
                    print(f"error: {problem}", file=sys.stderr)
                    status = monitor_rc if monitor_rc > 0 else 1
                break
            camera = procs.get("camera")
            if camera is not None and camera.poll() is not None:
                if camera.returncode != 0:
                    print(
                        f"error: the camera exited with status {camera.returncode}", file=sys.stderr
                    )
                    status = camera.returncode
                time.sleep(args.drain)
                break
    finally:
        for role in ("camera", "monitor", "console"):  # the console last: it writes the report
            if role in procs:
                rc = _terminate(procs[role], timeout=30.0 if role == "console" else 10.0)
                if role == "monitor" and rc not in (0, -signal.SIGTERM) and status == 0:
                    status = rc if rc > 0 else 1
        for sig in previous:  # ignored from here: a late Ctrl-C must not kill the exit
            signal.signal(sig, signal.SIG_IGN)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and exit 2 (``tcc_model.cli``)."""
    return run(parse_args(sys.argv[1:] if argv is None else argv))


def cli() -> None:
    """Console-script entry (``tcc-monitor``): :func:`main` under the one error convention."""
    from tcc_model.cli import entry_point

    entry_point(main)


if __name__ == "__main__":
    cli()
