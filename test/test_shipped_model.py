"""The bundle shipped in models/ still loads and runs with the current code.

A change of the bundle format, the preprocessing, the ONNX graphs' runner or the reference and
calibration files that breaks the shipped model fails here; regenerate it with
``make ship-model`` (models/ship_model.py) after such a change.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tcc_model.bundle import FORMAT_VERSION, read_manifest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "sim_pouring"


def _ship_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ship_model", REPO / "models" / "ship_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((SHIPPED / "model_card.json").read_text())


def test_manifest_is_the_current_format_and_every_hash_matches(card):
    manifest = read_manifest(SHIPPED, verify=True)  # sha256 of every file, bundle_id
    assert manifest["format_version"] == FORMAT_VERSION, "re-ship it: make ship-model"
    assert card["bundle_id"] == manifest["bundle_id"]
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 12 * 1024 * 1024, f"models/sim_pouring is {size / 1e6:.1f} MB"


def test_embeddings_of_the_fixed_input_are_reproduced(card):
    """The current code embeds the card's fixed input as when the model was shipped."""
    ship = _ship_module()
    expected = np.asarray(card["check"]["embeddings"], dtype=np.float32)
    actual = ship.check_embeddings(SHIPPED)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, atol=1e-3 * scale, rtol=0)


def test_monitor_runs_on_the_shipped_references_and_calibration():
    from tcc_model.engine import load_bundle
    from tcc_model.stream import ProgressMonitor, ReferenceSet, monitor_config

    engine = load_bundle(SHIPPED, backend="onnxruntime", device="cpu")
    references = ReferenceSet.load(SHIPPED, engine.bundle_id)
    monitor = ProgressMonitor(references, monitor_config(SHIPPED), engine)
    assert references.dim == engine.embedding_size
    frames = _ship_module().check_input(12)
    results = [monitor.process_frame(frame, stamp=i / 12.0) for i, frame in enumerate(frames)]
    valid = [r for r in results if r.valid]
    assert len(valid) >= len(results) // 2
    progress = np.array([r.progress for r in valid])
    assert np.isfinite(progress).all() and (progress >= 0).all() and (progress <= 1).all()
    assert all(r.phase_name in references.phase_names for r in valid)


def test_model_card_names_command_commit_data_and_metrics(card):
    text = (SHIPPED / "MODEL_CARD.md").read_text()
    launch = card["training"]["launches"][0]
    assert launch["command"].startswith("python -m tcc_model.train")
    assert launch["command"] in text
    assert card["training"]["data_generator"]["seed"] is not None
    assert card["metrics"], "the card carries the evaluation metrics"
    for source in card["metric_sources"].values():  # the metrics are of the shipped weights
        assert source["checkpoint_step"] == card["training"]["step"]
    for split in card["metrics"].values():
        assert 0.0 <= split["kendalls_tau"] <= 1.0


def test_the_alerts_quoted_in_the_card_are_of_the_shipped_thresholds(card):
    """The benchmark measured exactly the monitor the bundle ships (same calibration)."""
    if not card.get("alerts"):
        pytest.skip("the card quotes no alerts benchmark (make ship-model without bench_stream)")
    from tcc_model.stream.references import reference_metadata

    states = reference_metadata(SHIPPED)["calibration"]["detector_states"]
    measured = card["alerts"]["shipped"]["thresholds"]
    assert measured == pytest.approx({k: v["threshold"] for k, v in states.items()}, rel=1e-9)


def test_reshipping_the_same_model_keeps_its_training_record_and_refuses_another(card, tmp_path):
    from tcc_model.errors import UserError

    ship = _ship_module()
    out = tmp_path / "shipped"
    again = ship.ship(SHIPPED, out, {}, previous_card=SHIPPED / "model_card.json")
    assert again["metrics"] == card["metrics"] and again["training"] == card["training"]
    assert "recalibrated" in (out / "MODEL_CARD.md").read_text()
    other = dict(card, bundle_id="0" * 64)
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="other model files"):
        ship.ship(SHIPPED, tmp_path / "x", {}, previous_card=tmp_path / "other.json")
