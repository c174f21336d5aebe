"""Shared helpers for the reports commands write: strict JSON, number formatting, matplotlib.

* :func:`jsonable` / :func:`strict_json`: numpy scalars and arrays become plain JSON types and
  NaN / infinity become ``null`` (strict JSON parsers reject bare ``NaN``).
* :func:`fmt`: one number formatter for tables and console lines (``n/a`` for missing values).
* :func:`pyplot` / :func:`save_figure`: matplotlib on the Agg backend (no display) with one
  readable style, and an atomic PNG write.

Nothing heavy is imported at module level: matplotlib loads on the first :func:`pyplot` call.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Base font size of every figure (ticks one point smaller, titles one larger).
FONT_SIZE = 10
#: Resolution of saved figures.
FIGURE_DPI = 110


def jsonable(value: Any) -> Any:
    """``value`` with numpy types as plain Python types and non-finite floats as ``None``.

    Mappings become dicts with string keys; tuples, lists and arrays become lists. Dataclasses
    and other objects pass unchanged (``json`` then reports them).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is not None and type(value).__module__ == "numpy":
        return jsonable(tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strict_json(value: Any, indent: int | None = 2) -> str:
    """JSON text of ``value`` after :func:`jsonable` (never ``NaN``/``Infinity``), newline-ended."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False) + "\n"


def fmt(value: Any, pattern: str = "{:.3f}", missing: str = "n/a") -> str:
    """Format a number with ``pattern`` (e.g. ``"{:.1%}"``); ``None``/NaN give ``missing``.

    Integers print as integers (counts), except with a percent pattern; non-numbers are
    ``str()``-ed.
    """
    if value is None:
        return missing
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return missing
    if isinstance(value, int) and "%" not in pattern:
        return str(value)
    return pattern.format(value)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend with the project's figure style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": FONT_SIZE,
            "axes.titlesize": FONT_SIZE + 1,
            "axes.labelsize": FONT_SIZE,
            "xtick.labelsize": FONT_SIZE - 1,
            "ytick.labelsize": FONT_SIZE - 1,
            "legend.fontsize": FONT_SIZE - 1,
            "figure.titlesize": FONT_SIZE + 2,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default); close it."""
    from tcc_model.utils import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(
                tmp, dpi=FIGURE_DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png"
            )
    finally:
        pyplot().close(fig)
    return path
