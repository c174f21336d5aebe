"""Episode time from image stamps that may jump: far future, backwards or duplicated.

The monitor's time-based rules (a stall is *seconds* without progress) need a clock that only
moves forward by plausible steps. :class:`EpisodeClock` turns each image stamp into an episode
time: a step to the previous stamp that is positive and at most ``max_gap_s`` is kept; any other
step (a stamp from the far future, one that goes backwards, a duplicate) is replaced by the
typical frame period and counted as a jump. A lasting clock change (a bag restarted, a camera
re-synchronised) costs one jump: the next stamps are measured from the new base.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

#: Steps shorter than this (s) count as duplicated stamps (no camera frames 0.1 ms apart).
MIN_STEP_S = 1e-4


class EpisodeClock:
    """Monotonic episode time (s) from image stamps (s); ``jumps`` counts the replaced steps."""

    def __init__(self, max_gap_s: float = 5.0, default_period_s: float = 0.1) -> None:
        if not max_gap_s > 0 or not default_period_s > 0:
            raise ValueError("EpisodeClock: max_gap_s and default_period_s must be > 0")
        self.max_gap_s = float(max_gap_s)
        self.default_period_s = float(default_period_s)
        self.jumps = 0
        self._steps: deque[float] = deque(maxlen=32)
        self.reset()

    def reset(self) -> None:
        """Start a new episode at time 0 (the jump count is kept)."""
        self._time = 0.0
        self._last_stamp: float | None = None  # the stamp as received
        self._expected: float | None = None  # where the last stamp should have been

    @property
    def period_s(self) -> float:
        """Typical frame period: median of the recent accepted steps."""
        return float(np.median(self._steps)) if self._steps else self.default_period_s

    def _plausible(self, step: float) -> bool:
        return math.isfinite(step) and MIN_STEP_S < step <= self.max_gap_s

    def update(self, stamp: float) -> tuple[float, bool]:
        """Episode time of the frame stamped ``stamp``, and whether the stamp jumped."""
        if self._last_stamp is None or self._expected is None:
            self._last_stamp = self._expected = float(stamp)
            return self._time, False
        for base in (self._expected, self._last_stamp):
            step = float(stamp) - base
            if self._plausible(step):
                self._steps.append(step)
                self._time += step
                self._last_stamp = self._expected = float(stamp)
                return self._time, False
        step = self.period_s
        self.jumps += 1
        self._time += step
        self._expected += step
        self._last_stamp = float(stamp) if math.isfinite(stamp) else self._expected
        return self._time, True
