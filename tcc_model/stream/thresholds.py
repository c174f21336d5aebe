"""Thresholds from the per-episode maxima of the detector statistics on normal episodes.

* ``tail`` (the default): per detector, a generalized Pareto tail fitted to its per-episode
  maxima above their 75th percentile (:func:`tail_upper`: shape and scale from probability-
  weighted moments, the shape kept in [-0.5, 0.5], the scale widened for its estimation noise),
  and the threshold where that tail reaches rate / number of detectors. The shape lets a light
  tail (a bounded statistic) get a threshold near its largest normal values and a heavy one a
  threshold far above them; an exponential tail (shape 0, the previous fit) set light tails'
  thresholds far too high and heavy tails' too low (fitted on 110 episodes, its 1% thresholds
  alarmed on 6.7% of 300 fresh normal runs: README, alerts section). Each detector gets its own
  threshold, so one detector's heavy tail never raises another's. Then the split-conformal count
  (:func:`conformal_guard`): where the fitted tails still let calibration episodes through, the
  flagging detectors' thresholds are raised, cheapest episode first, until at most ``k`` of the
  ``n`` kept episodes exceed any threshold, with ``(k + 1) / (n + 1) <= rate``;

split-conformal methods (a new normal episode raises any alarm with probability <= the asked
false-alarm rate when the calibration episodes are exchangeable with it):

* ``fused``: every statistic is divided by its normal scale (the 75th percentile of its
  per-episode maxima, floored), the episode's fused score is the largest ratio, and ONE
  conformal quantile ``T`` of the fused scores at the rate gives each detector the threshold
  ``T x scale``;
* ``bonferroni``: each detector's own conformal quantile at rate / number of detectors.

Before that, calibration episodes whose fused score is far outside the others (above the upper
quartile + 3 x the interquartile range, at most 5% of them) are excluded and counted: one
anomalous or broken calibration run must not switch a detector off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tcc_model.errors import ConfigError
from tcc_model.stream.config import DETECTORS

CALIBRATION_METHODS = ("tail", "fused", "bonferroni")
DEFAULT_CALIBRATION_METHOD = "tail"
#: Smallest threshold per detector (a detector must not fire on any tiny value).
THRESHOLD_FLOORS = {
    "off_trajectory": 0.0,
    "stillness": 2.0,
    "direction": 0.2,
    "appearance": 2.0,
    "phase_skip": 0.5,
    "progress_stall": 1.0,
    "progress_backwards": 0.03,
}
#: Threshold at or above which a detector cannot fire (its statistic never gets there).
THRESHOLD_CEILINGS = {"direction": 1.0, "phase_skip": 1.0}
_MAX_EXCLUDED_SHARE = 0.05


def conformal_rank(n: int, alpha: float) -> int:
    """1-based rank of the split-conformal upper bound among ``n`` scores (> n: too few)."""
    return math.ceil((n + 1) * (1.0 - alpha))


def episodes_needed(alpha: float) -> int:
    """Fewest calibration episodes for a conformal bound at per-episode rate ``alpha``."""
    return math.ceil((1.0 - alpha) / alpha - 1e-9)


#: Quantile of the normal maxima above which :func:`tail_upper` fits the tail.
TAIL_QUANTILE = 0.75
#: Fewest excesses over :data:`TAIL_QUANTILE` for a fit there (fewer: over the median).
TAIL_MIN_EXCESSES = 15
#: Range of the fitted shape: from bounded light tails (-0.5) to Pareto-like ones (0.5).
TAIL_SHAPE_RANGE = (-0.5, 0.5)
#: The scale is widened by ``1 + TAIL_NOISE / sqrt(m)`` for ``m`` excesses.
TAIL_NOISE = 1.5


def tail_upper(scores: Sequence[float], alpha: float) -> float:
    """Upper ``1 - alpha`` quantile of a generalized Pareto tail fitted to ``scores``.

    Location ``u``: the :data:`TAIL_QUANTILE` of the scores (the median when that leaves fewer
    than :data:`TAIL_MIN_EXCESSES` above it). The ``m`` excesses over ``u`` give the shape ``xi``
    and scale ``sigma`` by probability-weighted moments (Hosking & Wallis 1987), ``xi`` kept in
    :data:`TAIL_SHAPE_RANGE` and ``sigma`` then set from the mean excess ``sigma / (1 - xi)`` and
    widened by ``1 + TAIL_NOISE / sqrt(m)`` for its estimation noise. The bound is where the tail
    reaches ``alpha``: ``u + sigma / xi x ((alpha / p_u)^-xi - 1)`` (``p_u`` the share above
    ``u``; ``xi = 0``: the exponential). On synthetic maxima of 110 episodes at alpha 0.25% (1%
    over four detectors), fresh episodes exceed the bound 0.6-1.4 times alpha for light (half-
    normal, gamma), exponential, Gumbel, log-normal and Pareto (shape 0.3) tails; the
    exponential fit alone gave 0.01-0.3 times alpha on light tails and 5.8 times on the Pareto.
    When ``alpha`` is not below ``p_u`` the empirical quantile is returned.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("tail_upper: no calibration scores")
    u = float(np.quantile(values, TAIL_QUANTILE))
    if np.count_nonzero(values > u) < TAIL_MIN_EXCESSES:
        u = float(np.median(values))
    excess = np.sort(values[values > u] - u)
    m = excess.size
    share = m / values.size
    if m < 2 or alpha >= share:
        return float(np.quantile(values, 1.0 - min(alpha, 1.0)))
    a0 = float(excess.mean())
    a1 = float(np.mean((1.0 - (np.arange(1, m + 1) - 0.35) / m) * excess))
    denominator = a0 - 2.0 * a1
    shape = 2.0 - a0 / denominator if denominator > 0 else TAIL_SHAPE_RANGE[1]
    shape = float(np.clip(shape, *TAIL_SHAPE_RANGE))
    sigma = a0 * (1.0 - shape) * (1.0 + TAIL_NOISE / math.sqrt(m))
    ratio = alpha / share
    if abs(shape) < 1e-6:
        return u - sigma * math.log(ratio)
    return u + sigma / shape * (ratio**-shape - 1.0)


def allowed_exceedances(n: int, rate: float) -> int:
    """Most calibration episodes (of ``n``) that may exceed: ``(k + 1) / (n + 1) <= rate``.

    Negative when ``n`` is too small for the rate (then not even one may exceed).
    """
    return math.floor(rate * (n + 1) + 1e-9) - 1


def conformal_guard(
    maxima: np.ndarray, thresholds: np.ndarray, rate: float
) -> tuple[np.ndarray, int]:
    """Raise ``thresholds [K]`` until few enough of ``maxima [n, K]`` exceed any of them.

    Few enough: :func:`allowed_exceedances` ``(n, rate)``, at least 0.

    Greedy: of the flagged episodes, the one whose exceedances cost least (summed over its
    detectors, each in units of that detector's spread: the median absolute deviation of its
    maxima) is cleared by raising those thresholds to its values, until few enough remain.
    Thresholds only go up; a detector no episode exceeds keeps its threshold. Returns the
    thresholds and the number of episodes still exceeding.
    """
    maxima = np.asarray(maxima, dtype=np.float64)
    values = np.asarray(thresholds, dtype=np.float64).copy()
    if not len(maxima):
        return values, 0
    spread = np.median(np.abs(maxima - np.median(maxima, axis=0)), axis=0)
    spread = np.maximum(spread, 1e-9 * np.maximum(np.abs(values), 1.0))
    allowed = max(allowed_exceedances(len(maxima), rate), 0)
    while True:
        over = maxima > values[None, :]
        flagged = np.flatnonzero(over.any(axis=1))
        if len(flagged) <= allowed:
            return values, len(flagged)
        cost = np.where(over[flagged], (maxima[flagged] - values) / spread, 0.0).sum(axis=1)
        worst = flagged[int(np.argmin(cost))]
        values = np.where(over[worst], np.nextafter(maxima[worst], np.inf), values)


def conformal_upper(
    scores: Sequence[float], alpha: float, margin: float = 1.2
) -> tuple[float, str]:
    """Split-conformal upper bound: P(new score > bound) <= alpha for exchangeable scores.

    The bound is the ``ceil((n + 1)(1 - alpha))``-th smallest score. With too few scores for
    that rank, the maximum times ``margin`` is returned (method ``max_times_margin``).
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))
    if values.size == 0:
        raise ValueError("conformal_upper: no calibration scores")
    rank = conformal_rank(values.size, alpha)
    if rank <= values.size:
        return float(values[rank - 1]), "conformal"
    return float(values[-1] * margin), "max_times_margin"


#: Quantile of each detector's per-episode maxima that the fused score divides by: above the
#: median, so that detectors with long and short tails reach the fused threshold more alike (with
#: the median, one long-tailed detector set T and pushed the others' thresholds to their
#: ceilings). Scales come from the other half of the episodes (:func:`_cross_fused`).
SCALE_QUANTILE = 0.75


def normal_scales(maxima: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Per detector: the :data:`SCALE_QUANTILE` of the per-episode maxima, floored (``[K]``)."""
    floors = np.array([max(THRESHOLD_FLOORS.get(n, 0.0), 1e-9) for n in names])
    if not len(maxima):
        return floors
    return np.maximum(np.quantile(maxima, SCALE_QUANTILE, axis=0), floors)


def outlier_episodes(maxima: np.ndarray, names: Sequence[str], rate: float = 1.0) -> np.ndarray:
    """Indices of calibration episodes whose fused score lies far above the others.

    At most ``max(1, rate x n)`` (and 5%) of them: excluding more normal episodes than the rate
    allows would raise the false-alarm rate above the one asked.
    """
    n = len(maxima)
    if n < 8:
        return np.zeros(0, dtype=np.int64)
    fused = np.max(maxima / normal_scales(maxima, names), axis=1)
    q1, q3 = np.quantile(fused, [0.25, 0.75])
    far = np.flatnonzero(fused > q3 + 3.0 * max(q3 - q1, 1e-9))
    worst = far[np.argsort(-fused[far])]
    limit = max(1, int(min(rate, _MAX_EXCLUDED_SHARE) * n))
    return np.sort(worst[:limit])


def _cross_fused(maxima: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Fused score of each episode with scales from the other half of the episodes.

    An episode never sets the scale that divides its own statistics (which would pull its score
    towards 1 and make the conformal bound too low).
    """
    n = len(maxima)
    if n < 4:
        return np.max(maxima / normal_scales(maxima, names), axis=1)
    fused = np.zeros(n)
    halves = (np.arange(0, n, 2), np.arange(1, n, 2))
    for fit_on, score_on in (halves, halves[::-1]):
        scales = normal_scales(maxima[fit_on], names)
        fused[score_on] = np.max(maxima[score_on] / scales, axis=1)
    return fused


def _too_few(n: int, alpha: float, rate: float, method: str) -> ConfigError:
    needed = episodes_needed(alpha)
    feasible = 1.0 / (n + 1) * (rate / alpha)
    return ConfigError(
        f"calibration: {n} normal episodes cannot support a false-alarm rate of {rate:g} per "
        f"episode with the {method} method: it needs at least {needed}; give more normal "
        f"episodes (--calib-dataset / --calib-episodes; `python -m tcc_model.data.sim_pouring "
        f"--anomaly-rate 0` renders them) or ask for --false-alarm-rate >= {feasible:.3g}"
    )


def _method_thresholds(
    kept: np.ndarray, names: list[str], rate: float, method: str, alpha: float, margin: float
) -> tuple[np.ndarray, dict[str, float]]:
    """``(thresholds [K], tail thresholds the guard raised)`` of one method on ``kept`` maxima."""
    floors = np.array([THRESHOLD_FLOORS.get(name, 0.0) for name in names])
    if method == "tail":
        if not len(kept):
            raise ConfigError("calibration: no normal episodes left to fit the thresholds")
        per_detector = rate / max(len(names), 1)
        tail = np.array([tail_upper(kept[:, k], per_detector) for k in range(len(names))])
        tail = np.maximum(tail, floors)
        values, _ = conformal_guard(kept, tail, rate)
        return values, {name: float(t) for name, t, v in zip(names, tail, values) if v > t}
    if method == "fused":
        bound, _ = conformal_upper(_cross_fused(kept, names), alpha, margin)
        return np.maximum(bound * normal_scales(kept, names), floors), {}
    values = np.array([conformal_upper(kept[:, k], alpha, margin)[0] for k in range(len(names))])
    return np.maximum(values, floors), {}


def thresholds_from_maxima(
    maxima: np.ndarray,
    names: Sequence[str],
    rate: float,
    method: str = DEFAULT_CALIBRATION_METHOD,
    strict: bool = False,
    margin: float = 1.2,
) -> dict[str, Any]:
    """Thresholds per detector from ``maxima [episodes, detectors]`` of normal episodes.

    Returns ``thresholds`` (name -> value), ``excluded`` (episode indices), ``method``
    (``tail`` / ``fused`` / ``bonferroni``; ``tail_few_episodes`` or ``..._max_times_margin``
    when there were too few episodes for the rate and ``strict`` is False; ``strict`` raises
    :class:`ConfigError` naming the count needed), ``episodes_needed`` and ``achieved_rate``
    (share of kept episodes that any threshold flags), ``raised_by_guard`` (``tail``: the tail
    threshold of each detector :func:`conformal_guard` raised).
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method {method!r}: choose from {CALIBRATION_METHODS}")
    names = list(names)
    maxima = np.asarray(maxima, dtype=np.float64).reshape(-1, len(names))
    excluded = outlier_episodes(maxima, names, rate)
    kept = np.delete(maxima, excluded, axis=0)
    n = len(kept)
    alpha = rate if method != "bonferroni" else rate / max(len(names), 1)
    enough = conformal_rank(n, alpha) <= n
    if not enough and strict:
        raise _too_few(n, alpha, rate, method)
    label = (
        method
        if enough
        else f"{method}_{'few_episodes' if method == 'tail' else 'max_times_margin'}"
    )
    values, raised = _method_thresholds(kept, names, rate, method, alpha, margin)
    flagged = (kept > values[None, :]).any(axis=1) if n else np.zeros(0, dtype=bool)
    return {
        "thresholds": dict(zip(names, values.tolist())),
        "excluded": excluded.tolist(),
        "method": label,
        "episodes_needed": episodes_needed(alpha),
        "achieved_rate": float(flagged.mean()) if n else float("nan"),
        "raised_by_guard": raised,
    }


def detector_states(
    thresholds: Mapping[str, float], maxima: np.ndarray, names: Sequence[str], has_pixels: bool
) -> dict[str, dict[str, Any]]:
    """Per detector: ``state`` on/off, its threshold, the largest normal value and why off."""
    states: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        value = float(thresholds[name])
        top = float(np.max(maxima[:, k])) if len(maxima) else float("nan")
        reason = ""
        if DETECTORS[name].needs_pixels and not has_pixels:
            reason = "the calibration episodes came without pixels (thumbnails)"
        elif not math.isfinite(value):
            reason = "no finite threshold from the calibration episodes"
        elif value >= (1.0 - 1e-3) * THRESHOLD_CEILINGS.get(name, math.inf):
            reason = (
                f"normal episodes reach {top:.4g}: the threshold {value:.4g} is at the "
                f"statistic's ceiling {THRESHOLD_CEILINGS[name]:g}, so it could never fire"
            )
        states[name] = {
            "state": "off" if reason else "on",
            "threshold": value,
            "normal_max": top,
            "reason": reason,
        }
    return states
