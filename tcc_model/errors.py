"""The error types of the project: one per artefact family, all ``ValueError`` subclasses.

A loader raises the family's error with a message that names the file (or key) and the fix;
it wraps whatever the library underneath throws (``KeyError``, ``zipfile.BadZipFile``, ONNX
Runtime's protobuf errors, ...) with :func:`wrap_errors`, so that a command needs to catch
:class:`UserError` only. :func:`tcc_model.cli.run_main` prints such an error as one
``error: ...`` line and exits 2; anything else is a bug and keeps its traceback.

This module imports nothing heavy (no torch, numpy or ROS): every CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: Longest echo of an input value in a message or log line (see :func:`safe_text`).
MAX_ECHO_CHARS = 120


class UserError(ValueError):
    """Bad input or configuration: the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """A configuration file, ``--set`` override or command-line value is invalid."""


class DatasetError(UserError):
    """A dataset folder, manifest, video or label file is invalid."""


class CheckpointError(UserError):
    """A training checkpoint is missing, damaged or of another kind."""


class BundleError(UserError):
    """A model bundle (``bundle.yaml``, ONNX graphs) is missing, damaged or of another kind."""


class ReferencesError(BundleError):
    """A bundle's reference trajectories (``references.npz`` / ``references.json``) are invalid."""


class BagError(UserError):
    """A rosbag is missing, damaged or lacks the topics asked for."""


def safe_text(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as a printable one-line string: control characters escaped, at most ``limit``.

    Use it for every input echoed into a message, log line or diagnostic value.
    """
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    if text.isprintable():
        return text
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii")


#: Exceptions a library may raise on a damaged or unexpected file (wrapped by :func:`wrap_errors`).
_WRAPPED: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    UnicodeError,
    AttributeError,
)


@contextlib.contextmanager
def wrap_errors(
    family: type[UserError],
    path: str | os.PathLike,
    fix: str,
    extra: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Re-raise library errors inside the block as ``family("<path>: <what>; <fix>")``.

    Errors that already are a :class:`UserError` pass unchanged. ``extra`` adds exception types
    (e.g. ``zipfile.BadZipFile`` is an ``Exception`` but not in the default set; ONNX Runtime's
    errors are plain ``Exception`` subclasses).
    """
    try:
        yield
    except UserError:
        raise
    except (*_WRAPPED, *extra) as exc:
        what = safe_text(exc, limit=240) or type(exc).__name__
        if isinstance(exc, KeyError):
            what = f"missing key {what}"
        raise family(f"{safe_text(path)}: {what}; {fix}") from exc
