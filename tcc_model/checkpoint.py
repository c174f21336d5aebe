"""Training checkpoints: atomic ``torch.save`` of plain dicts/tensors, read ``weights_only``.

Layout of a checkpoint file::

    {"format": "tcc_ros.checkpoint", "version": 1,
     "model": state_dict, "optimizer": state_dict | None, "step": int,
     "config": {"model": ModelConfig.to_dict(), ...training config...},
     "rng_state": {"python": [...], "numpy": [...], "torch": ByteTensor, "cuda": [ByteTensor]},
     "extra": {...}}                      # e.g. {"loss_modules": state_dict} for SaL/supervised
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tcc_model.errors import CheckpointError, safe_text, wrap_errors
from tcc_model.models import Embedder, ModelConfig, build_model
from tcc_model.utils import atomic_path

CHECKPOINT_FORMAT = "tcc_ros.checkpoint"
CHECKPOINT_VERSION = 1
_FIX = "pass a checkpoint (.pt) written by python -m tcc_model.train"

__all__ = ["CheckpointError"]  # re-exported from tcc_model.errors


def _unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP / ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def get_rng_state() -> dict[str, Any]:
    """Python/numpy/torch(/CUDA) RNG states as tensors and lists (``weights_only``-loadable)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (
            np_name,
            np.asarray(np_keys, dtype=np.uint32),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: dict[str, Any],
    rng_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then ``os.replace``). Returns ``path``.

    ``config`` must hold the model architecture under ``config["model"]``
    (a :meth:`ModelConfig.to_dict`); ``rng_state`` defaults to :func:`get_rng_state`.
    """
    if "model" not in config:
        raise ValueError("config must contain the model architecture under config['model']")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "config": config,
        "rng_state": rng_state if rng_state is not None else get_rng_state(),
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Pickled Python objects are never executed. A missing, truncated, foreign or newer file raises
    :class:`CheckpointError` naming it and the fix.
    """
    from tcc_model.cli import check_checkpoint

    path = check_checkpoint(path, option="checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" on foreign files
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise CheckpointError(
                f"{path}: holds a pickled Python object ({safe_text(refused.group(1))}), which is "
                f"never loaded; {_FIX}"
            ) from exc
        raise CheckpointError(
            f"{path}: not a readable checkpoint (damaged, truncated or another format); {_FIX}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - zip/pickle/IO errors of a damaged file: one line
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or damaged "
            f"({type(exc).__name__}: {_last_line(exc)}); {_FIX}"
        ) from exc
    _check_layout(path, ckpt)
    return ckpt


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an error (torch puts advice first, the cause last)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return safe_text(lines[-1] if lines else type(exc).__name__, limit=200)


def _check_layout(path: Path, ckpt: Any) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` is laid out like save_checkpoint does."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a tcc_ros checkpoint (no format={CHECKPOINT_FORMAT!r} key; a bare "
            f"state_dict or another program's file); {_FIX}"
        )
    version = ckpt.get("version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: version {safe_text(version)!r} is not an integer; {_FIX}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version} is newer than supported "
            f"({CHECKPOINT_VERSION}); update tcc_ros"
        )
    config = ckpt.get("config")
    if not isinstance(ckpt.get("model"), dict) or not (
        isinstance(config, dict) and isinstance(config.get("model"), dict)
    ):
        raise CheckpointError(
            f"{path}: lacks the model weights or config['model'] (damaged or written by "
            f"another tool); {_FIX}"
        )


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` that raises :class:`CheckpointError` naming differing keys/shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:

        def short(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

        parts = [
            f"missing keys: {short(missing)}" if missing else "",
            f"unexpected keys: {short(unexpected)}" if unexpected else "",
            f"shape mismatch (checkpoint vs model): {short(shapes)}" if shapes else "",
        ]
        raise CheckpointError(
            f"{what} does not match the model architecture; "
            + "; ".join(p for p in parts if p)
            + ". Use a checkpoint trained with the same model config, or a new --out directory."
        )
    module.load_state_dict(state)


def load_model(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[Embedder, dict[str, Any]]:
    """Build the :class:`Embedder` stored in a checkpoint, load its weights, put it in eval mode.

    Returns ``(model, checkpoint_dict)``. ``device=None`` keeps the model on CPU.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    model_cfg = dict(ckpt["config"]["model"])
    model_cfg["backbone_weights"] = None  # weights come from the checkpoint, not the backbone file
    with wrap_errors(CheckpointError, path, f"its model config is invalid; {_FIX}"):
        model = build_model(ModelConfig.from_dict(model_cfg))
    load_state_checked(model, ckpt["model"], f"checkpoint {path}")
    model.eval()
    if device is not None:
        model.to(device)
    return model, ckpt
