"""The shared CLI convention (tcc_model.cli) and error helpers (tcc_model.errors)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tcc_model import cli
from tcc_model.errors import (
    BundleError,
    CheckpointError,
    ConfigError,
    ReferencesError,
    UserError,
    safe_text,
    wrap_errors,
)


def _raiser(exc: BaseException):
    def main(argv):  # noqa: ANN001, ANN202
        raise exc

    return main


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (BundleError("b/bundle.yaml: bad; re-export"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.mp4"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_user_errors_print_one_line_and_exit_with_status(capsys, exc, status) -> None:
    assert cli.run_main(_raiser(exc)) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    if isinstance(exc, FileNotFoundError):
        assert "x.mp4" in err[0]


def test_bugs_keep_their_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        cli.run_main(_raiser(ZeroDivisionError("bug")))


def test_debug_env_shows_user_error_traceback(monkeypatch) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        cli.run_main(_raiser(ConfigError("x")))


def test_main_return_value_is_the_exit_status() -> None:
    assert cli.run_main(lambda argv: None) == 0
    assert cli.run_main(lambda argv: 3) == 3


def test_checkpoint_and_bundle_are_told_apart(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text("format_version: 1\n")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"x")

    assert cli.check_checkpoint(ckpt) == ckpt
    assert cli.check_bundle(bundle) == bundle
    with pytest.raises(CheckpointError, match="is a bundle folder"):
        cli.check_checkpoint(bundle)
    with pytest.raises(CheckpointError, match=r"checkpoints/last\.pt"):
        cli.check_checkpoint(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        cli.check_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(BundleError, match="tcc_model.export --checkpoint"):
        cli.check_bundle(ckpt)
    with pytest.raises(BundleError, match="has no bundle.yaml"):
        cli.check_bundle(run)


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "cuda:x", "cuda;rm"])
def test_bad_device_names_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="--device"):
        cli.check_device(name)


def test_cuda_device_without_cuda_is_a_config_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the error case cannot be built here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        cli.check_device("cuda")
    assert cli.check_device("cpu") == "cpu"
    assert cli.check_device(None) is None


def test_safe_text_caps_and_escapes() -> None:
    assert safe_text("plain") == "plain"
    long = safe_text("x" * 100_000, limit=50)
    assert len(long) < 80 and "100000 chars" in long
    escaped = safe_text("a\nb\x1b[31m")
    assert "\n" not in escaped and "\x1b" not in escaped and "\\n" in escaped


def test_wrap_errors_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "references.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ReferencesError) as info:
        with wrap_errors(ReferencesError, bad, "re-run tcc_model.reference", (zipfile.BadZipFile,)):
            zipfile.ZipFile(bad)
    assert str(bad) in str(info.value) and "re-run tcc_model.reference" in str(info.value)
    with pytest.raises(ReferencesError, match="missing key 'embeddings'"):
        with wrap_errors(ReferencesError, bad, "fix"):
            {}["embeddings"]  # noqa: B018
    with pytest.raises(UserError, match="^kept$"):  # user errors pass unchanged
        with wrap_errors(BundleError, bad, "fix"):
            raise ConfigError("kept")


def test_print_written_lists_every_output(capsys) -> None:
    cli.print_written({"checkpoints": "runs/x/checkpoints", "summary": "runs/x/summary.md"})
    assert capsys.readouterr().out.strip() == (
        "wrote: checkpoints runs/x/checkpoints, summary runs/x/summary.md"
    )


def test_cli_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, tcc_model.cli; print(sorted({'torch', 'numpy', 'rclpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _console_scripts() -> list[tuple[str, str]]:
    import re

    text = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    return re.findall(r'"([\w-]+)=([\w.]+:\w+)"', text)


@pytest.mark.parametrize(("name", "target"), _console_scripts())
def test_console_scripts_print_one_error_line_for_a_missing_checkpoint(
    name: str, target: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """An installed command behaves as ``python -m``: exit 2 and one ``error:`` line."""
    import importlib

    module, func = target.split(":")
    missing = tmp_path / "missing"
    argv = {
        "tcc-train": ["--dataset", f"folder:{missing}", "--out", str(tmp_path / "run")],
        "tcc-evaluate": [
            "--checkpoint",
            str(missing / "last.pt"),
            "--dataset",
            f"folder:{missing}",
        ],
        "tcc-export": ["--checkpoint", str(missing / "last.pt"), "--out", str(tmp_path / "b")],
        "tcc-monitor": ["--bundle", str(missing), "--params", str(missing / "p.yaml")],
    }[name]
    monkeypatch.setattr(sys, "argv", [name, *argv])
    entry = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as info:
        sys.exit(entry())
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing" in errors[0]
