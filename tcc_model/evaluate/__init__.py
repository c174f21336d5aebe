"""Evaluate a checkpoint with the TCC paper's protocols and write metrics and visual reports.

::

    python -m tcc_model.evaluate --checkpoint CKPT --dataset NAME [--data-root DIR] [--out DIR]
        [--eval-dataset NAME] [--eval-split val] [--protocols tau,classification,...]
        [--overwrite] [--stride 2] [--device cuda|cpu]

Every frame of the train split of ``--dataset`` and of the ``--eval-split`` of
``--eval-dataset`` (default: ``--dataset``, e.g. a shifted set from another generator run) is
embedded (eval mode, causal context frames). On the **normal** episodes only (``anomaly`` is
None) it runs Kendall's tau, phase classification (10/50/100% of training videos), few-shot
classification (1..10 labelled videos) and phase progression, exactly as
:mod:`tcc_model.evaluation` documents, or the subset ``--protocols`` names (tau alone needs no
training videos). Datasets without phase labels get Kendall's tau and the unsupervised plots only.
Writes ``OUT/metrics.json`` (every number and the exact configuration), ``OUT/summary.md``,
``OUT/embeddings.npz`` and the plots / synchronized video. ``OUT`` defaults to the run's
``eval/`` or, when that holds a report, the first free ``eval-2/``, ``eval-3/``...; an explicit
``--out`` holding a report is refused unless ``--overwrite``.

Modules: :mod:`~.embedding` (``EmbeddedVideo``, ``embed_split``), :mod:`~.protocols`
(``ProtocolConfig``, ``run_protocols``), :mod:`~.reports` (headline, ``summary.md``, plots,
embeddings), :mod:`~.command` (the CLI). Names are re-exported lazily, so ``--help`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbeddedVideo": "embedding",
    "embed_split": "embedding",
    "dataset_kwargs_from_checkpoint": "embedding",
    "DEFAULT_STRIDE": "protocols",
    "PROTOCOLS": "protocols",
    "ProtocolConfig": "protocols",
    "run_protocols": "protocols",
    "headline": "reports",
    "save_embeddings": "reports",
    "summary_markdown": "reports",
    "write_visual_reports": "reports",
    "REPORT_NAME": "command",
    "build_parser": "command",
    "output_dir": "command",
    "evaluate_checkpoint": "command",
    "main": "command",
    "cli": "command",
    "_parse_args": "command",
}

__all__ = sorted(name for name in _EXPORTS if not name.startswith("_"))


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
