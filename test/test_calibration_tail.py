"""The default calibration method: a generalized Pareto tail per detector, then the count guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tcc_model.stream import (
    allowed_exceedances,
    conformal_guard,
    tail_upper,
    thresholds_from_maxima,
)


def _exceed_exponential(t: float) -> float:
    return math.exp(-t)


def _exceed_half_normal(t: float) -> float:
    return math.erfc(t / math.sqrt(2.0))


def _exceed_lomax(t: float) -> float:  # numpy's pareto(a): a Pareto tail of shape 1 / a
    return (1.0 + t) ** (-1.0 / 0.3)


@pytest.mark.parametrize(
    ("draw", "exceed"),
    [
        (lambda rng, n: rng.exponential(size=n), _exceed_exponential),
        (lambda rng, n: np.abs(rng.normal(size=n)), _exceed_half_normal),  # light, bounded-like
        (lambda rng, n: rng.pareto(1 / 0.3, size=n), _exceed_lomax),  # heavy (shape 0.3)
    ],
    ids=["exponential", "half-normal", "pareto"],
)
def test_the_tail_bound_holds_its_rate_on_light_exponential_and_heavy_tails(draw, exceed):
    rng = np.random.default_rng(0)
    alpha = 0.0025  # 1% over four detectors
    rates = [exceed(tail_upper(draw(rng, 110), alpha)) for _ in range(300)]
    assert 0.4 * alpha < np.mean(rates) < 2.0 * alpha


def test_the_tail_bound_of_constant_scores_is_the_value_itself():
    assert tail_upper(np.full(50, 3.0), 0.01) == 3.0
    assert tail_upper([2.0], 0.01) == 2.0


def test_tail_thresholds_keep_the_false_alarm_rate_on_fresh_normal_episodes():
    rng = np.random.default_rng(1)
    names = ["off_trajectory", "stillness", "appearance"]

    def draw(n: int) -> np.ndarray:  # per-episode maxima with different offsets and tails
        return [0.5, 2.0, 2.0] + rng.exponential([0.3, 2.0, 0.8], size=(n, 3))

    rates = []
    for _ in range(100):
        fitted = thresholds_from_maxima(draw(110), names, 0.05, method="tail", strict=True)
        thr = np.array([fitted["thresholds"][n] for n in names])
        rates.append(np.mean((draw(400) > thr).any(axis=1)))
    assert 0.02 < np.mean(rates) <= 0.05


def test_one_detector_outlier_leaves_the_other_thresholds_alone():
    rng = np.random.default_rng(2)
    names = ["off_trajectory", "stillness", "appearance", "progress_backwards"]
    maxima = np.abs(rng.normal(size=(110, 4))) * [1.0, 3.0, 2.0, 0.05] + [1.0, 2.0, 2.0, 0.0]
    clean = thresholds_from_maxima(maxima, names, 0.01, method="tail")["thresholds"]
    maxima[17, 3] = 0.6  # one normal run whose progress fell back far
    odd = thresholds_from_maxima(maxima, names, 0.01, method="tail")["thresholds"]
    for name in names:
        assert odd[name] == pytest.approx(clean[name], rel=0.1), name
    assert odd["progress_backwards"] < 0.5  # the outlier's 0.6 does not set the threshold


def test_heavy_tails_are_guarded_by_the_conformal_count_of_calibration_episodes():
    rng = np.random.default_rng(3)
    names = ["off_trajectory", "stillness", "appearance"]

    def draw(n: int) -> np.ndarray:  # Pareto tails of shape 1: beyond the fit's shape range
        return [0.5, 2.0, 2.0] + rng.pareto(1.0, size=(n, 3)) * [0.3, 2.0, 0.8]

    guarded, tail_only = [], []
    for _ in range(50):
        maxima = draw(110)
        fitted = thresholds_from_maxima(maxima, names, 0.01, method="tail", strict=True)
        # (0 + 1) / 111 <= 1%: not one kept calibration episode may exceed
        assert fitted["achieved_rate"] == 0.0
        thr = np.array([fitted["thresholds"][n] for n in names])
        kept = np.delete(maxima, fitted["excluded"], axis=0)
        tail = np.maximum([tail_upper(kept[:, k], 0.01 / 3) for k in range(3)], [0.0, 2.0, 2.0])
        assert np.all(thr >= tail)  # the guard only raises
        assert np.all(thr >= kept.max(axis=0))
        fresh = draw(1000)
        guarded.append(np.mean((fresh > thr).any(axis=1)))
        tail_only.append(np.mean((fresh > tail).any(axis=1)))
    assert np.mean(tail_only) > 0.015  # the fitted tail alone lets such tails through
    # each detector at or above its calibration maximum: about 3 / 111 at most for three
    # detectors (the excluded outlying episode lets slightly more through)
    assert np.mean(guarded) < np.mean(tail_only)
    assert np.mean(guarded) < 1.2 * 3 / 111


def test_the_guard_clears_the_cheapest_episodes_and_leaves_the_allowed_number():
    maxima = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 1.0], [1.0, 1.2], [1.0, 1.0]] * 20)
    maxima[7] = [9.0, 9.0]  # far above on both detectors
    assert allowed_exceedances(len(maxima), 0.02) == 1  # (1 + 1) / 101 <= 2%
    values, left = conformal_guard(maxima, np.array([2.0, 1.1]), 0.02)
    assert left == 1  # the one allowed exceedance is the most expensive episode
    assert (maxima[7] > values).all()
    assert values[0] == pytest.approx(5.0) and values[1] == pytest.approx(1.2)
    values, left = conformal_guard(maxima, np.array([2.0, 1.1]), 0.005)
    assert left == 0 and np.all(values >= maxima.max(axis=0))
