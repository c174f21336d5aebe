"""Paired robustness metrics agree with the evaluation protocols and pair episodes correctly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tcc_model import evaluation as ev
from tcc_model import robustness as rb


def _videos(seed: int, count: int, noise: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Embeddings along one smooth curve of task progress (plus noise) with 3 phases."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(size=(3, 8))
    embs, labels = [], []
    for _ in range(count):
        length = int(rng.integers(30, 50))
        s = np.sort(rng.uniform(0, 1, length))
        curve = np.stack([np.sin(np.pi * s), np.cos(2 * np.pi * s), s], 1) @ directions
        embs.append(curve + rng.normal(scale=noise, size=curve.shape))
        labels.append(np.minimum((s * 3).astype(int), 2))
    return embs, labels


@pytest.fixture(scope="module")
def probes_and_sets():
    train_embs, train_labels = _videos(0, 20, 0.05)
    probes = rb.ProtocolProbes(train_embs, train_labels, num_phases=3)
    embs, labels = _videos(1, 8, 0.05)
    rng = np.random.default_rng(2)
    noisy = [e + rng.normal(scale=0.6, size=e.shape) for e in embs]  # the same episodes, shifted
    names = [f"ep{i}" for i in range(8)]
    control = probes.set_stats(names, embs, labels, stride=1)
    shifted = probes.set_stats(names, noisy, labels, stride=1)
    return (train_embs, train_labels, embs, labels), control, shifted


def test_pooled_values_equal_the_evaluation_protocols(probes_and_sets) -> None:
    (train_embs, train_labels, embs, labels), control, _ = probes_and_sets
    values = rb.metric_values(control)
    assert values["tau"] == pytest.approx(ev.kendalls_tau(embs, stride=1))
    cls = ev.phase_classification(train_embs, train_labels, embs, labels, fractions=(0.1,))
    assert values["cls10"] == pytest.approx(cls[0.1].value)
    prog = ev.phase_progression(train_embs, train_labels, embs, labels, num_phases=3)
    assert values["r2"] == pytest.approx(prog[1.0].value)


def test_paired_differences_see_the_shift_and_are_zero_for_the_control(probes_and_sets) -> None:
    _, control, shifted = probes_and_sets
    same = rb.paired_differences(control, control, resamples=50)
    assert all(d["diff"] == 0 and d["se"] == 0 for d in same.values())
    paired = rb.paired_differences(control, shifted, resamples=200)
    for key in ("tau", "cls10", "r2"):
        assert paired[key]["diff"] < 0, key  # noise in the embeddings hurts every metric
        assert 0 < paired[key]["se"] < abs(paired[key]["diff"]), key
    other = rb.SetStats(
        list("abcdefgh"), shifted.tau, shifted.cls_hits, shifted.frames, shifted.prog
    )
    with pytest.raises(ValueError, match="same episodes in the same order"):
        rb.paired_differences(control, other)


def test_stream_records_pool_by_frames_and_count_false_alarms(probes_and_sets) -> None:
    _, control, _ = probes_and_sets
    stats = rb.SetStats(control.names[:2], control.tau[:2, :2], control.cls_hits[:2],
                        control.frames[:2], control.prog[:2])  # fmt: skip
    records = [
        {"frames": 10, "abs_err": 0.1, "phase_hits": 1.0, "false_alarm": False},
        {"frames": 30, "abs_err": 0.3, "phase_hits": 0.5, "false_alarm": True},
    ]
    rb.add_stream_records(stats, records)
    values = rb.metric_values(stats)
    assert values["progress_mae"] == pytest.approx((0.1 * 10 + 0.3 * 30) / 40)
    assert values["phase_acc"] == pytest.approx((10 + 15) / 40)
    assert values["false_alarms"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="1 stream records for 2 episodes"):
        rb.add_stream_records(stats, records[:1])


def test_bench_table_shows_values_and_signed_paired_differences() -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_robustness.py"
    spec = importlib.util.spec_from_file_location("bench_robustness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_robustness", module)
    spec.loader.exec_module(module)
    report = {
        "episodes": {"control": 16, "lighting": 16},
        "rows": {
            "control": {"tau": {"value": 0.9}, "cls10": {"value": 0.85}},
            "lighting": {
                "tau": {"value": 0.8, "diff": -0.1, "se": 0.02},
                "cls10": {"value": 0.87, "diff": 0.02, "se": 0.01},
            },
        },
    }
    table = module.markdown(report)
    assert "| control (16) | 0.900 | 85.0% |" in table
    assert "| lighting (16) | 0.800 (−0.100 ± 0.020) | 87.0% (+2.0 ± 1.0) |" in table


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_robustness.py"
    spec = importlib.util.spec_from_file_location("bench_robustness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_robustness", module)
    spec.loader.exec_module(module)
    return module


def _with_alarms(names: list[str], alarms: list[bool]) -> rb.SetStats:
    n = len(names)
    stats = rb.SetStats(names, np.zeros((n, n)), np.zeros(n), np.ones(n), np.zeros((n, 1, 4)))
    records = [{"frames": 1, "abs_err": 0.0, "phase_hits": 1.0, "false_alarm": a} for a in alarms]
    rb.add_stream_records(stats, records)
    return stats


def test_calibration_check_counts_alarms_per_set_and_bounds_the_pooled_rate() -> None:
    from scipy.stats import beta

    report = _bench_module().calibration_check
    names = [f"ep{i}" for i in range(16)]
    stats = {
        "control": _with_alarms(names, [False] * 16),
        "lighting": _with_alarms(names, [True] + [False] * 15),
        "motion": _with_alarms(names, [False] * 16),
        "all": _with_alarms(names, [True] * 4 + [False] * 12),  # not a single factor
    }
    check = report(stats, {"lighting": ["stillness"], "all": ["stillness", "appearance"] * 2})
    assert check["factors"] == ["lighting", "motion", "all"]
    assert check["per_set"]["lighting"] == {
        "false_alarms": 1,
        "episodes": 16,
        "detectors": {"stillness": 1},
    }
    assert check["per_set"]["all"]["detectors"] == {"stillness": 2, "appearance": 2}
    assert check["per_set"]["motion"]["detectors"] == {}
    cal = {"source": "the bundle's references.json", "episodes": 109, "false_alarm_rate": 0.01}
    line = _bench_module().calibration_line(
        {"bundle": "b", "calibration": cal, "calibration_check": check}
    )
    assert "lighting 1/16 (stillness 1), motion 0/16, all 4/16 (appearance 2, stillness 2)" in line
    assert "pooled: 3.1 per 100" in line
    assert check["per_set"]["all"]["false_alarms"] == 4
    pooled = check["single_factor_pooled"]
    assert (pooled["false_alarms"], pooled["episodes"]) == (1, 32)
    assert pooled["per_100"] == pytest.approx(100 / 32)
    assert pooled["upper_95_per_100"] == pytest.approx(100 * beta.ppf(0.95, 2, 31))
    # no alarm in n episodes: the bound is 1 - 0.05^(1/n), still far above 2 per 100 for n = 32
    quiet = report({k: _with_alarms(names, [False] * 16) for k in ("control", "motion", "camera")})
    bound = quiet["single_factor_pooled"]["upper_95_per_100"]
    assert bound == pytest.approx(100 * (1 - 0.05 ** (1 / 32)))
    assert bound > 2


def test_monitor_from_the_bundle_uses_its_references_and_calibration(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from test_stream_config import saved_references

    from tcc_model.errors import BundleError, ReferencesError
    from tcc_model.stream import monitor_config

    bench = _bench_module()
    calibration = {"distance_threshold": 7.5, "false_alarm_rate": 0.01, "episodes": ["v/a"] * 5}
    calibration["detector_states"] = {
        "off_trajectory": {"state": "on"},
        "stillness": {"state": "off"},
    }
    saved_references(tmp_path / "bundle", calibration)
    engine = SimpleNamespace(bundle_id="bundle-x")
    monitor, cal = bench._bundle_monitor(tmp_path / "bundle", engine)
    assert monitor.config == monitor_config(tmp_path / "bundle")
    assert monitor.config.distance_threshold == 7.5
    assert [r for r in monitor.references.reference_ids] == ["a", "b"]
    args = SimpleNamespace(
        monitor="bundle", train_dataset="t", calib_split="v", false_alarm_rate=0.2
    )
    summary = bench.calibration_summary(cal, args)
    assert summary["episodes"] == 5 and summary["false_alarm_rate"] == 0.01
    assert summary["detectors_on"] == ["off_trajectory"] and "bundle" in summary["source"]
    with pytest.raises(ReferencesError):
        bench._bundle_monitor(tmp_path / "bundle", SimpleNamespace(bundle_id="other"))
    (tmp_path / "plain").mkdir()
    both = SimpleNamespace(bundle=[tmp_path / "bundle", tmp_path / "plain"], no_stream=False)
    assert bench._monitor_mode(SimpleNamespace(**vars(both), monitor="auto")) == "fit"
    with pytest.raises(BundleError, match=r"plain has no references.json.*--monitor fit"):
        bench._monitor_mode(SimpleNamespace(**vars(both), monitor="bundle"))
    one = SimpleNamespace(bundle=[tmp_path / "bundle"], no_stream=False, monitor="auto")
    assert bench._monitor_mode(one) == "bundle"


def test_models_compared_on_the_same_episodes(probes_and_sets) -> None:
    _, control, shifted = probes_and_sets
    bench = _bench_module()
    rows = bench.versus({"control": control, "lighting": control}, {"control": shifted}, 100, 0)
    assert list(rows) == ["control"]  # only the sets both models were measured on
    expected = rb.paired_differences(control, shifted, 100, 0)
    for key in ("tau", "cls10", "r2"):
        assert rows["control"][key]["diff"] == pytest.approx(expected[key]["diff"])
        assert rows["control"][key]["diff"] < 0 < rows["control"][key]["se"]
    table = bench.markdown_versus(rows, {"control": 8})
    tau = rows["control"]["tau"]
    assert f"| control (8) | −{abs(tau['diff']):.3f} ± {tau['se']:.3f} |" in table
