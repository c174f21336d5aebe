"""Check a calibration against shifted normal episodes: does the monitor cry wolf off-distribution?

Thresholds are calibrated on in-distribution normal episodes. A cell changes (a new bottle, other
light, a faster robot), so :func:`check_sets` replays the calibrated monitor on the normal
episodes of sets rendered with one factor shifted (``benchmarks/bench_robustness.py generate``,
or the user's own recordings made under a deliberate change) and counts the false alarms per set
and per detector. :func:`pooled_check` pools the single-factor sets with a one-sided
Clopper-Pearson upper bound: 16 episodes alone cannot show 2 alarms per 100.
``tcc_model.reference --check-sets`` stores the result in the bundle's calibration record
(``shift_check``), so the bundle says which factors its thresholds were checked against.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: The in-distribution set and the all-factors set: not single-factor shifts.
CONTROL, ALL_FACTORS = "control", "all"


def false_alarms(monitor: Any, episodes: Sequence[Any]) -> dict[str, Any]:
    """False alarms of ``monitor`` on normal ``episodes`` (EmbeddedEpisode): count, detectors."""
    fired: list[str] = []
    for ep in episodes:
        results = monitor.run(ep.embeddings, ep.stamps, ep.pixels)
        first = next((r.detector for r in results if r.anomaly), None)
        if first is not None:
            fired.append(first or "unknown")
    return {
        "false_alarms": len(fired),
        "episodes": len(episodes),
        "detectors": dict(Counter(fired)),
    }


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate from ``k`` events in ``n`` trials."""
    if n <= 0:
        return math.nan
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(level, k + 1, n - k))


def pooled_check(per_set: Mapping[str, Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """``factors``, ``per_set`` and the single-factor sets pooled, per 100 episodes."""
    single = [v for k, v in per_set.items() if k not in (CONTROL, ALL_FACTORS)]
    k = sum(int(v["false_alarms"]) for v in single)
    n = sum(int(v["episodes"]) for v in single)
    return {
        "factors": [name for name in per_set if name != CONTROL],
        "per_set": dict(per_set),
        "single_factor_pooled": {
            "false_alarms": k,
            "episodes": n,
            "per_100": 100.0 * k / n if n else math.nan,
            f"upper_{round(level * 100)}_per_100": 100.0 * upper_bound(k, n, level),
        },
    }


def check_sets(monitor: Any, sets: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """:func:`pooled_check` of ``monitor``'s false alarms on each named set of normal episodes."""
    return pooled_check({name: false_alarms(monitor, eps) for name, eps in sets.items()})


def check_line(check: Mapping[str, Any]) -> str:
    """One line: false alarms per set (and detector), then the single factors pooled."""

    def detectors(counts: Mapping[str, int]) -> str:
        return f" ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})" if counts else ""

    pooled = check["single_factor_pooled"]
    sets = ", ".join(
        f"{name} {v['false_alarms']}/{v['episodes']}" + detectors(v.get("detectors") or {})
        for name, v in check["per_set"].items()
    )
    return (
        f"false alarms on shifted normal episodes: {sets}; single factors pooled: "
        f"{pooled['per_100']:.1f} per 100 (95% upper bound {pooled['upper_95_per_100']:.1f})"
    )
