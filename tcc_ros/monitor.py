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

import yaml

from tcc_ros.camera_source import ANOMALY_KINDS

NODE_KEY_SUFFIX = "progress_monitor"


def read_node_parameters(params_file: str | os.PathLike) -> dict[str, Any]:
    """``ros__parameters`` of the progress_monitor entry of a ROS 2 parameter file.

    Raises ``ValueError`` naming the file when it is missing, not YAML or has no such entry.
    """
    path = Path(params_file)
    if not path.is_file():
        raise ValueError(f"--params {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"--params {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--params {path}: expected a mapping of node names")
    for key, section in data.items():
        name = str(key).rstrip("/").split("/")[-1]
        if name in (NODE_KEY_SUFFIX, "**") and isinstance(section, dict):
            params = section.get("ros__parameters")
            if isinstance(params, dict):
                return params
    raise ValueError(
        f"--params {path}: no '/**/progress_monitor: ros__parameters:' section; "
        "start from config/progress_monitor.yaml"
    )


def build_commands(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, list[str]]:
    """Command lines of the child processes, keyed by role (monitor, console, camera)."""
    py = [sys.executable, "-m"]
    namespace = str(params.get("output_namespace", "/tcc")).rstrip("/")
    image_topic = args.image_topic or str(params.get("image_topic", "/camera/image_raw"))
    monitor = [
        *py,
        "tcc_ros.monitor_node",
        "--ros-args",
        "--params-file",
        str(args.params),
        "-p",
        f"image_topic:={image_topic}",
    ]
    if args.bundle:
        monitor += ["-p", f"bundle:={args.bundle}"]
    commands = {"monitor": monitor}
    if not args.no_console:
        console = [*py, "tcc_ros.console", "--namespace", namespace]
        if args.report:
            console += ["--report", str(args.report)]
        commands["console"] = console
    if args.with_demo_camera:
        camera = [
            *py,
            "tcc_ros.camera_source",
            "--rate",
            f"{args.demo_rate:g}",
            "--image-topic",
            image_topic,
            "--ground-truth-topic",
            f"{namespace}/ground_truth",
            "--reset-topic",
            f"{namespace}/reset",
        ]
        if args.demo_sim:
            camera += [
                "--sim",
                "--episodes",
                str(args.demo_episodes or 1),
                "--seed",
                str(args.demo_seed),
            ]
            if args.demo_anomaly:
                camera += ["--anomaly", args.demo_anomaly]
        else:
            camera += ["--dataset", args.demo_dataset, "--split", args.demo_split]
            if args.demo_episodes:
                camera += ["--episodes", str(args.demo_episodes)]
        if params.get("compressed"):
            camera.append("--compressed")
        if args.demo_size:
            camera += ["--size", str(args.demo_size)]
        commands["camera"] = camera
    return commands


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tcc_ros.monitor", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--params",
        required=True,
        type=Path,
        help="ROS 2 parameter file (config/progress_monitor.yaml)",
    )
    p.add_argument("--bundle", default=None, help="bundle directory (overrides the params file)")
    p.add_argument("--image-topic", default=None, help="overrides image_topic of the params file")
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
        default=3.0,
        help="seconds to wait for the last outputs after the camera ends (default 3)",
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
    params = read_node_parameters(args.params)
    if not (args.bundle or params.get("bundle")):
        raise ValueError("no bundle: pass --bundle DIR or set bundle in the params file")
    commands = build_commands(args, params)
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
                print(f"error: the monitor node exited with status {monitor_rc}", file=sys.stderr)
                status = monitor_rc or 1
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
                rc = _terminate(procs[role])
                if role == "monitor" and rc not in (0, -signal.SIGTERM) and status == 0:
                    status = rc if rc > 0 else 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and exit 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
