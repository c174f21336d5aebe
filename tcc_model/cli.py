"""The one command-line convention of every ``python -m tcc_model.* / tcc_ros.*`` command.

* :func:`run_main` runs a command's ``main``: a :class:`~tcc_model.errors.UserError` (or a missing
  file) prints exactly one ``error: ...`` line and exits 2; Ctrl-C exits 130; anything else is a
  bug and keeps its traceback. ``TCC_DEBUG=1`` shows the traceback of user errors too.
* Shared arguments: :func:`add_checkpoint_arg`, :func:`add_bundle_arg`, :func:`add_device_arg`,
  with checks that tell a checkpoint from a bundle and say which was given.
* :func:`stage` prints a line before and after every step longer than about two seconds;
  :func:`print_written` closes a command with one ``wrote: ...`` line listing its outputs.

Nothing heavy is imported here, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tcc_model.errors import BundleError, CheckpointError, ConfigError, UserError, safe_text

#: Exit status of a user error (bad input, missing file): the convention of argparse.
EXIT_USER_ERROR = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Environment variable that makes user errors show their traceback.
DEBUG_ENV = "TCC_DEBUG"

_USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FileExistsError,
)


def error_line(exc: BaseException) -> str:
    """The one-line ``error: ...`` text for ``exc`` (newlines folded, length capped)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return f"error: {safe_text(text, limit=2000)}"


MainFn = Callable[[Sequence[str] | None], int | None]


def run_main(main: MainFn, argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the project's error convention and return its exit status."""
    try:
        return int(main(argv) or 0)
    except _USER_ERRORS as exc:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(error_line(exc), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point(main: MainFn) -> None:
    """``if __name__ == "__main__": entry_point(main)``: run and exit with its status."""
    sys.exit(run_main(main, None))


# --- shared arguments ----------------------------------------------------------------------

BUNDLE_MARKER = "bundle.yaml"


def check_checkpoint(path: str | os.PathLike, option: str = "--checkpoint") -> Path:
    """Return ``path`` if it is a checkpoint file; otherwise say what it is and what to pass."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / BUNDLE_MARKER).is_file():
            raise CheckpointError(
                f"{option} {path} is a bundle folder, not a training checkpoint; pass the run's "
                f"checkpoints/last.pt (or use --bundle where the command takes one)"
            )
        for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if candidate.is_file():
                raise CheckpointError(
                    f"{option} {path} is a folder; pass the checkpoint file {candidate}"
                )
        raise CheckpointError(f"{option} {path} is a folder without a checkpoint; pass a .pt file")
    raise CheckpointError(
        f"{option} {path} does not exist; pass a checkpoint .pt written by training"
    )


def check_bundle(path: str | os.PathLike, option: str = "--bundle") -> Path:
    """Return ``path`` if it is a bundle folder; otherwise say what it is and what to pass."""
    path = Path(path)
    if path.is_dir() and (path / BUNDLE_MARKER).is_file():
        return path
    if path.is_file():
        raise BundleError(
            f"{option} {path} is a file, not a bundle folder; a checkpoint becomes a bundle with "
            f"python -m tcc_model.export --checkpoint {path} --out BUNDLE_DIR"
        )
    if path.is_dir():
        raise BundleError(
            f"{option} {path} has no {BUNDLE_MARKER}; pass a folder written by python -m "
            f"tcc_model.export"
        )
    raise BundleError(f"{option} {path} does not exist; pass a folder written by tcc_model.export")


def check_device(name: str | None) -> str | None:
    """Validate a ``--device`` value (``cpu``, ``cuda``, ``cuda:N``; None = automatic)."""
    if name is None or name in ("", "auto"):
        return None
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"--device {safe_text(name)!r}: expected cpu, cuda or cuda:N")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available on this machine (torch "
                f"{torch.__version__}); use --device cpu or leave it out"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return name


def add_checkpoint_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint PATH``: a training checkpoint (.pt); check it with check_checkpoint."""
    parser.add_argument(
        "--checkpoint", required=required, type=Path, help="training checkpoint (.pt)"
    )


def add_bundle_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--bundle DIR``: an exported bundle folder; check it with :func:`check_bundle`."""
    parser.add_argument(
        "--bundle", required=required, type=Path, help="bundle folder written by tcc_model.export"
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """``--device``: cpu, cuda or cuda:N (default: CUDA when present); check with check_device."""
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)"
    )


# --- progress and results --------------------------------------------------------------------


@contextlib.contextmanager
def stage(what: str, stream=None) -> Iterator[None]:  # noqa: ANN001
    """Print ``what ...`` now and ``what: done in N s`` after the block (steps over ~2 s).

    ``stream`` defaults to the ``sys.stderr`` of the moment (not of import time).
    """
    stream = sys.stderr if stream is None else stream
    print(f"{what} ...", file=stream, flush=True)
    start = time.perf_counter()
    yield
    print(f"{what}: done in {time.perf_counter() - start:.1f} s", file=stream, flush=True)


def print_written(outputs: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike]) -> None:
    """The closing line of a command: ``wrote: label PATH, ...`` for every output it wrote."""
    if isinstance(outputs, Mapping):
        parts = [f"{label} {path}" for label, path in outputs.items()]
    else:
        parts = [str(path) for path in outputs]
    print("wrote: " + ", ".join(parts), flush=True)
