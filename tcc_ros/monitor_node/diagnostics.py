"""Counters behind the node's ``/diagnostics`` and the status they give (no ROS types here).

Counts are totals since start, except failures and failed reloads, which count towards the
status only inside a recent window, so ``/diagnostics`` recovers once a problem has passed.
Latency is the node's own processing time (frame received -> outputs published, steady clock),
which means the same under ``use_sim_time`` and bag replay; the age of a frame's stamp on the
node's ROS clock is reported beside it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcc_model.errors import safe_text

#: Seconds a failed frame or a failed reload keeps the status at WARN.
PROBLEM_WINDOW_S = 30.0

OK, WARN, ERROR = 0, 1, 2  # DiagnosticStatus levels (as bytes in the message)


@dataclass
class FrameStats:
    """Counters shared by the subscription callback and the worker thread (use ``lock``)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    stamp_jumps: int = 0
    last_frame_at: float | None = None
    last_rejection: str = ""
    last_failure: str = ""
    failed_at: deque = field(default_factory=lambda: deque(maxlen=256))
    reload_failed_at: float | None = None
    last_reload: str = ""
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=512))
    stamp_ages_s: deque = field(default_factory=lambda: deque(maxlen=512))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reject(self, reason: object) -> None:
        with self.lock:
            self.rejected += 1
            self.last_rejection = safe_text(reason)

    def fail(self, reason: object) -> None:
        with self.lock:
            self.failed += 1
            self.failed_at.append(time.monotonic())
            self.last_failure = safe_text(reason)

    def recent_failures(self, now: float, window_s: float = PROBLEM_WINDOW_S) -> int:
        """Failures in the last ``window_s`` seconds (call with ``lock`` held)."""
        return sum(1 for t in self.failed_at if now - t <= window_s)


@dataclass
class Rates:
    """Input/processing rates between two diagnostics messages."""

    at: float = field(default_factory=time.monotonic)
    received: int = 0
    processed: int = 0

    def update(self, now: float, received: int, processed: int) -> tuple[float, float]:
        elapsed = max(now - self.at, 1e-6)
        rates = ((received - self.received) / elapsed, (processed - self.processed) / elapsed)
        self.at, self.received, self.processed = now, received, processed
        return rates


def _percentiles_ms(values: Any, prefix: str, which: tuple[int, ...]) -> dict[str, str]:
    if not values:
        return {}
    arr = 1e3 * np.asarray(values, dtype=np.float64)
    return {f"{prefix}_p{q}_ms": f"{np.percentile(arr, q):.1f}" for q in which}


def status(
    stats: FrameStats,
    rates: Rates,
    *,
    image_topic: str,
    started_at: float,
    no_frame_timeout_s: float,
    type_error: str,
    info: dict[str, str],
) -> tuple[int, str, dict[str, str]]:
    """``(level, message, values)`` of the node's diagnostic status now."""
    now = time.monotonic()
    with stats.lock:
        input_rate, processed_rate = rates.update(now, stats.received, stats.processed)
        recent = stats.recent_failures(now, PROBLEM_WINDOW_S)
        reload_failed = (
            stats.reload_failed_at is not None and now - stats.reload_failed_at <= PROBLEM_WINDOW_S
        )
        silent_for = None if stats.last_frame_at is None else now - stats.last_frame_at
        values = {
            "image_topic": safe_text(image_topic),
            **info,
            "input_rate_hz": f"{input_rate:.2f}",
            "processed_rate_hz": f"{processed_rate:.2f}",
            "frames_received": str(stats.received),
            "frames_processed": str(stats.processed),
            "frames_dropped": str(stats.dropped),
            "frames_rejected": str(stats.rejected),
            "frames_failed": str(stats.failed),
            "frames_failed_recent": str(recent),
            "stamp_jumps": str(stats.stamp_jumps),
            "last_rejection": stats.last_rejection,
            "last_failure": stats.last_failure,
            "last_reload": stats.last_reload,
            **_percentiles_ms(stats.latencies_s, "latency", (50, 99)),
            **_percentiles_ms(stats.stamp_ages_s, "stamp_age", (50,)),
        }
        last_reload = stats.last_reload
    level, message = OK, "ok"
    if type_error:
        level, message = ERROR, type_error
    elif recent:
        level, message = WARN, f"{recent} frames failed in the last {PROBLEM_WINDOW_S:.0f} s"
    elif reload_failed:
        level, message = WARN, last_reload
    elif silent_for is None:
        waited = now - started_at
        if waited > no_frame_timeout_s:
            level, message = WARN, f"no frames received on {image_topic} for {waited:.1f} s"
        else:
            message = f"waiting for frames on {image_topic}"
    elif silent_for > no_frame_timeout_s:
        level, message = WARN, f"no frames for {silent_for:.1f} s"
    return level, safe_text(message, 400), values


def image_type_error(
    topic: str, publisher_types: list[str], type_names: dict[bool, str], compressed: bool
) -> str:
    """Why the image topic cannot feed the node ("" when every publisher has the right type)."""
    expected = type_names[compressed]
    wrong = sorted({t for t in publisher_types if t != expected})
    if not wrong:
        return ""
    return (
        f"image_topic {topic} has publishers of {', '.join(wrong)}, expected {expected}; "
        f"set compressed:={str(not compressed).lower()} or point image_topic at the right topic"
    )
