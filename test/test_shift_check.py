"""The calibration check against shifted normal episodes (``tcc_model.reference --check-sets``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tcc_model.errors import ConfigError
from tcc_model.shift_check import check_line, check_sets, upper_bound


class _Monitor:
    """Raises an alarm (from ``detector``) on the frames whose embedding is above 1."""

    def run(self, embeddings, stamps, pixels):  # noqa: ANN001, ANN201
        return [
            SimpleNamespace(anomaly=bool(e[0] > 1), detector="off_trajectory" if e[0] > 1 else "")
            for e in embeddings
        ]


def _episodes(alarming: int, total: int) -> list[SimpleNamespace]:
    eps = []
    for i in range(total):
        emb = np.zeros((5, 2))
        if i < alarming:
            emb[3:, 0] = 2.0  # alarms on two frames: still one false alarm
        eps.append(SimpleNamespace(embeddings=emb, stamps=None, pixels=None))
    return eps


def test_false_alarms_are_counted_per_set_and_detector_and_pooled_over_single_factors():
    sets = {
        "control": _episodes(0, 16),
        "lighting": _episodes(1, 16),
        "motion": _episodes(3, 16),
        "all": _episodes(9, 16),
    }
    check = check_sets(_Monitor(), sets)
    assert check["factors"] == ["lighting", "motion", "all"]
    assert check["per_set"]["motion"] == {
        "false_alarms": 3,
        "episodes": 16,
        "detectors": {"off_trajectory": 3},
    }
    pooled = check["single_factor_pooled"]  # control and "all" are not single factors
    assert (pooled["false_alarms"], pooled["episodes"]) == (4, 32)
    assert pooled["per_100"] == pytest.approx(12.5)
    assert pooled["upper_95_per_100"] > pooled["per_100"]
    assert "motion 3/16 (off_trajectory 3)" in check_line(check)


def test_the_upper_bound_says_what_few_episodes_cannot_show():
    assert upper_bound(0, 16) > 0.15  # 0 of 16 still allows 17 per 100
    assert upper_bound(0, 150) < 0.02  # ~150 alarm-free episodes show 2 per 100
    assert upper_bound(3, 3) == 1.0


def test_reference_refuses_a_missing_check_folder_before_embedding(tmp_path: Path):
    from tcc_model.reference_cli import _check_sets

    with pytest.raises(ConfigError, match="--check-sets .*no such folder"):
        _check_sets(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no dataset folder"):
        _check_sets(tmp_path / "empty")
    for name in ("objects", "control"):
        (tmp_path / "sets" / name).mkdir(parents=True)
        (tmp_path / "sets" / name / "manifest.json").write_text("{}")
    assert [p.name for p in _check_sets(tmp_path / "sets")] == ["control", "objects"]
