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
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tcc_model.models import Embedder, ModelConfig, build_model
from tcc_model.utils import atomic_path

CHECKPOINT_FORMAT = "tcc_ros.checkpoint"
CHECKPOINT_VERSION = 1


from tcc_model.errors import CheckpointError  # noqa: E402  (re-exported)


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
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path or --out")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt/foreign file; report one clear line
        raise CheckpointError(
            f"{str(path)!r} is not a readable tcc_ros checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a tcc_ros checkpoint (no format={CHECKPOINT_FORMAT!r} key); "
            "pass a file written by tcc_model.train"
        )
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has version {ckpt['version']}, newer than supported "
            f"({CHECKPOINT_VERSION}); update tcc_ros"
        )
    return ckpt


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
    model = build_model(ModelConfig.from_dict(model_cfg))
    load_state_checked(model, ckpt["model"], f"checkpoint {str(path)!r}")
    model.eval()
    if device is not None:
        model.to(device)
    return model, ckpt
