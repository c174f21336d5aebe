"""Training: typed config layering, batch order, the training module, the Trainer and the CLI.

* :mod:`tcc_model.train.config`: typed sections (``DataConfig``, ``TrainConfig``,
  ``TrainingConfig``) and their layering (defaults < YAML < flags < ``--set``).
* :mod:`tcc_model.train.order`: the deterministic, resumable batch order.
* :mod:`tcc_model.train.module`: embedder + loss, with bf16 autocast, distinct-frame encoding
  and ``torch.compile``.
* :mod:`tcc_model.train.trainer`: the :class:`Trainer` (data, optimiser, step, checkpoints).
* :mod:`tcc_model.train.loop`: its training loop (loader, logging, validation).
* :mod:`tcc_model.train.cli`: ``python -m tcc_model.train``.

Names are re-exported lazily, so that ``python -m tcc_model.train --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_CONFIG": "config",
    "RUNTIME_KEYS": "config",
    "DataConfig": "config",
    "TrainConfig": "config",
    "TrainingConfig": "config",
    "layer_config": "config",
    "load_config_file": "config",
    "step_seed": "order",
    "batch_positions": "order",
    "StepBatchSampler": "order",
    "EpochItems": "order",
    "TrainModule": "module",
    "compile_embedder": "module",
    "frame_ids": "module",
    "Trainer": "trainer",
    "DivergedError": "trainer",
    "build_parser": "cli",
    "resolve_config": "cli",
    "run": "cli",
    "main": "cli",
    "cli_main": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
