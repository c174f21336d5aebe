"""ROS 2 node of the progress monitor (``progress_monitor``), split by concern.

* :mod:`~tcc_ros.monitor_node.node`: the node (subscription, worker thread, services), with
  :mod:`~tcc_ros.monitor_node.frames` (mailbox, per-frame pipeline) and
  :mod:`~tcc_ros.monitor_node.publishing` (publishers, ``info``, ``/diagnostics``);
* :mod:`~tcc_ros.monitor_node.parameters` / :mod:`~tcc_ros.monitor_node.declare`: the one
  definition of its parameters and their typed declaration;
* :mod:`~tcc_ros.monitor_node.outputs`: output messages; :mod:`~tcc_ros.monitor_node.overlay`:
  the overlay image; :mod:`~tcc_ros.monitor_node.diagnostics`: counters and status;
  :mod:`~tcc_ros.monitor_node.stamps`: episode time from stamps that may jump;
* :mod:`~tcc_ros.monitor_node.app`: the entry point (``python -m tcc_ros.monitor_node``).

Importing this package is light: the ROS-side names load on first use, so the entry point can
install its signal handlers before the heavy imports.
"""

from __future__ import annotations

from typing import Any

from tcc_ros.monitor_node.app import main

_NODE_NAMES = ("FrameMonitor", "LoadedMonitor", "ProgressMonitorNode", "load_monitor")

__all__ = [*_NODE_NAMES, "draw_overlay", "main"]


def __getattr__(name: str) -> Any:
    if name == "ProgressMonitorNode":
        from tcc_ros.monitor_node.node import ProgressMonitorNode

        return ProgressMonitorNode
    if name in _NODE_NAMES:
        from tcc_ros.monitor_node import loading

        return getattr(loading, name)
    if name == "draw_overlay":
        from tcc_ros.monitor_node.overlay import draw_overlay

        return draw_overlay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
