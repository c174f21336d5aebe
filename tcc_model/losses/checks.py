"""Argument checks shared by the temporal losses: one ``ValueError`` naming the argument."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_embeddings(embs: Tensor, name: str = "embs", ndim: int | None = 3) -> None:
    """Require a finite, non-empty floating-point tensor (with ``ndim`` dimensions if given)."""
    if not isinstance(embs, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(embs).__name__}")
    if ndim is not None and embs.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(embs.shape)}")
    if not embs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {embs.dtype}")
    if embs.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(embs.shape)}")
    if not bool(torch.isfinite(embs).all()):
        raise ValueError(
            f"{name} contains NaN or Inf values; check the model output / learning rate"
        )


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_integer_tensor(
    x: object, name: str, shape: tuple[int, ...], device: torch.device
) -> Tensor:
    """``x`` as a long tensor on ``device``; ValueError unless integer-valued of ``shape``."""
    try:
        t: Tensor = x if isinstance(x, Tensor) else torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be an integer tensor of shape {shape}") from err
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (frame indices), got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.long)
