"""Entry point of the progress monitor node: signals first, then ROS, then spin until stopped.

SIGINT and SIGTERM only set an event, from the first line of :func:`main` until the process
ends: a Ctrl-C in a terminal (SIGINT to the whole process group, often twice when ``ros2 launch``
forwards its own) can never raise ``KeyboardInterrupt`` during start-up or clean-up. After the
clean-up they are ignored (:func:`ignore_stop_signals`): the interpreter's own shutdown resets
Python-level handlers to the default, and a late second Ctrl-C would kill the process there.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

USAGE = """usage: python -m tcc_ros.monitor_node [--help]
         --ros-args [--params-file FILE] [-p KEY:=VALUE] [-r __ns:=/NAMESPACE] [-r OLD:=NEW]

ROS 2 node: camera frames in; task progress, phase, alignment and anomalies out.
Outputs under the node's namespace (default /tcc): progress, phase, alignment, anomaly, overlay,
info (latched); services reset (tcc_ros/srv/ResetEpisode), reload (tcc_ros/srv/ReloadBundle).
Start from config/progress_monitor.yaml. Parameters (name, type, default):
"""


def _wants_help(argv: Sequence[str]) -> bool:
    own = list(argv)[: list(argv).index("--ros-args")] if "--ros-args" in argv else list(argv)
    return any(a in ("-h", "--help") for a in own)


def catch_stop_signals() -> threading.Event:
    """An event set by SIGINT / SIGTERM from now on (instead of KeyboardInterrupt)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def ignore_stop_signals() -> None:
    """After the clean-up: ignore SIGINT / SIGTERM while the interpreter shuts down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def spin_until(node: Any, stop: threading.Event) -> None:
    """Spin ``node`` on a single-threaded executor until ``stop`` is set or ROS shuts down."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; a bad parameter or bundle raises a UserError (exit 2)."""
    stop = catch_stop_signals()  # kept until exit on purpose (see module doc)
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_help(argv):
        from tcc_ros.monitor_node.parameters import help_text

        print(USAGE + help_text())
        return 0
    import rclpy

    from tcc_ros.monitor_node.node import NODE_NAME, ProgressMonitorNode

    rclpy.init(
        args=[NODE_NAME, *argv], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO
    )
    node = None
    try:
        node = ProgressMonitorNode()
        if not stop.is_set():
            spin_until(node, stop)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()
    return 0
