"""bench_train: the GEMM ceiling covers exactly the step's work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(bench, *overrides: str):
    from tcc_model.config import apply_overrides
    from tcc_model.train.config import TrainingConfig, layer_config

    data = layer_config("folder:bench", str(bench.REPO / "config/train/sim_pouring.yaml"), None, [])
    data = apply_overrides(
        TrainingConfig,
        data.to_dict(),
        [
            "model.image_size=32",
            "model.light_width=8",
            "model.embedding_size=16",
            "train.batch_size=2",
            "train.amp=false",
            "data.num_frames=4",
            *overrides,
        ],
    )
    return TrainingConfig.from_dict(data)


@pytest.mark.parametrize("distinct", ["true", "false"])
def test_ceiling_layers_carry_all_the_flops_of_a_training_step(bench, distinct):
    torch.set_num_threads(1)
    config = _tiny(bench, f"train.distinct_frames={distinct}")
    ceiling = bench.layer_ceiling(config, repeats=1)
    names = [row["layer"] for row in ceiling["layers"]]
    model_layers = [
        name
        for name, module in bench.Variant(config).model.named_modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))
    ]
    assert sorted(set(names)) == sorted(model_layers)
    # the layers alone do the step's counted work (no layer missed or counted twice, no input
    # gradient for the image layer, as in training); the rest is the loss's small matrix products
    step = bench.Variant(config).flops() / 1e9
    assert 0.95 * step <= ceiling["gflop"] <= step
    assert ceiling["gflops"] > 0
