"""Damaged reference files and the one source of monitor settings (``monitor_config``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tcc_model.errors import ConfigError, ReferencesError
from tcc_model.stream import MonitorConfig, ReferenceSet, monitor_config

PHASES = ["reach", "pour"]


def saved_references(bundle: Path, calibration: dict | None = None) -> ReferenceSet:
    rng = np.random.default_rng(0)
    refs = ReferenceSet.from_episodes(
        [rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=(9, 4)).astype(np.float32)],
        [np.repeat([0, 1], 6), np.repeat([0, 1], [4, 5])],
        PHASES,
        [{"pour": 6}, {"pour": 4}],
        "bundle-x",
        ["a", "b"],
        10.0,
    )
    refs.calibration = dict(calibration or {})
    refs.save(bundle)
    return refs


def _rewrite_npz(bundle: Path, **changes: object) -> None:
    path = bundle / "references.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _rewrite_json(bundle: Path, **changes: object) -> None:
    path = bundle / "references.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def _truncate_npz(bundle: Path) -> None:
    path = bundle / "references.npz"
    path.write_bytes(path.read_bytes()[:200])


def _bad_utf8(bundle: Path) -> None:
    (bundle / "references.json").write_bytes(b'{"format_version": 1, "bundle_id": "\xff\xfe"}')


DAMAGE = {
    "missing embeddings": (lambda b: _rewrite_npz(b, embeddings=None), "references.npz", "embed"),
    "string embeddings": (
        lambda b: _rewrite_npz(b, embeddings=np.array(["x"] * 21)),
        "references.npz",
        "",
    ),
    "float offsets": (
        lambda b: _rewrite_npz(b, offsets=np.array([0.0, 12.0, 21.0])),
        "references.npz",
        "offsets",
    ),
    "offsets past the end": (
        lambda b: _rewrite_npz(b, offsets=np.array([0, 12, 30])),
        "references.npz",
        "offsets",
    ),
    "truncated npz": (_truncate_npz, "references.npz", ""),
    "npz is text": (
        lambda b: (b / "references.npz").write_text("not a zip"),
        "references.npz",
        "",
    ),
    "bad utf-8": (_bad_utf8, "references.json", ""),
    "json not an object": (
        lambda b: (b / "references.json").write_text("[1, 2]"),
        "references.json",
        "object",
    ),
    "invalid json": (
        lambda b: (b / "references.json").write_text("{"),
        "references.json",
        "",
    ),
    "phase_names a string": (
        lambda b: _rewrite_json(b, phase_names="reach"),
        "references.json",
        "phase_names",
    ),
    "no reference_ids": (
        lambda b: _rewrite_json(b, reference_ids=None),
        "references.json",
        "reference_ids",
    ),
    "calibration a list": (
        lambda b: _rewrite_json(b, calibration=[1]),
        "references.json",
        "calibration",
    ),
    "old format": (
        lambda b: _rewrite_json(b, format_version=0),
        "references.json",
        "format_version",
    ),
    "phase id beyond the names": (
        lambda b: _rewrite_npz(b, phase_ids=np.full(21, 5)),
        "references.npz",
        "phase id",
    ),
    "npz missing": (lambda b: (b / "references.npz").unlink(), "references.npz", "not found"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_references_raise_references_error_naming_the_file(tmp_path, case):
    damage, filename, words = DAMAGE[case]
    saved_references(tmp_path)
    damage(tmp_path)
    with pytest.raises(ReferencesError) as info:
        ReferenceSet.load(tmp_path)
    message = str(info.value)
    assert filename in message and "python -m tcc_model.reference" in message
    assert words in message and "\n" not in message


def test_saved_references_round_trip(tmp_path):
    refs = saved_references(tmp_path)
    loaded = ReferenceSet.load(tmp_path, bundle_id="bundle-x")
    assert loaded.reference_ids == refs.reference_ids
    np.testing.assert_array_equal(loaded.embeddings[1], refs.embeddings[1])
    with pytest.raises(ReferencesError, match="bundle-y"):
        ReferenceSet.load(tmp_path, bundle_id="bundle-y")


def test_monitor_config_takes_the_calibration_then_the_overrides(tmp_path):
    saved_references(
        tmp_path,
        {
            "temperature": 0.7,
            "distance_threshold": 2.5,
            "stall_seconds": 1.5,
            "phase_source": "alignment",
            "rest_phases": ["pour"],
            "method": "conformal",  # not a setting: ignored
        },
    )
    config = monitor_config(tmp_path)
    assert config.temperature == 0.7 and config.distance_threshold == 2.5
    assert config.stall_seconds == 1.5 and config.rest_phases == ("pour",)
    assert config.phase_source == "alignment"
    # overrides win; strings (command line / ROS parameters) become the field type
    config = monitor_config(
        tmp_path,
        {"distance_threshold": "3", "window": 32, "rest_phases": ["reach"], "fps": None},
    )
    assert config.distance_threshold == 3.0 and config.window == 32
    assert config.rest_phases == ("reach",) and config.stall_seconds == 1.5
    assert monitor_config(None, {"transition": [0.5, 0.5], "transition_min_offset": 0}) == (
        MonitorConfig(transition=(0.5, 0.5), transition_min_offset=0)
    )


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"windw": 32}, "unknown monitor setting 'windw'"),
        ({"window": "wide"}, "window='wide': expected int"),
        ({"window": 2.5}, "window=2.5: expected int"),
        ({"window": True}, "window=True: expected int"),
        ({"distance_threshold": "far"}, "distance_threshold='far': expected float | None"),
        ({"transition": 0.5}, "transition=0.5: expected tuple[float, ...]"),
        ({"window": 2}, "window >= 4"),
        ({"phase_source": "oracle"}, "phase_source must be one of"),
    ],
)
def test_monitor_config_names_the_bad_key_value_and_type(overrides, words):
    with pytest.raises(ConfigError) as info:
        monitor_config(None, overrides)
    assert words in str(info.value)


def test_monitor_config_rejects_a_damaged_calibration_naming_the_file(tmp_path):
    saved_references(tmp_path, {"stall_seconds": "long"})
    with pytest.raises(ConfigError, match=r"references\.json calibration.*stall_seconds"):
        monitor_config(tmp_path)
    with pytest.raises(ReferencesError, match="not found"):
        monitor_config(tmp_path / "missing")
