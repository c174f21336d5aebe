"""Deployment bundle manifest: read, write and verify ``bundle.yaml``.

A bundle is a directory holding ``bundle.yaml`` and the files it lists (ONNX graphs, the
``model.safetensors`` weights, optional int8/TensorRT variants, references added later). Every
listed file carries its sha256; :func:`read_manifest` checks them all, so a truncated copy or a
file swapped by hand is rejected before anything runs.

``bundle_id`` is a sha256 over the *model* files only (``encoder.onnx``, ``head.onnx``,
``model.safetensors``): derived variants (int8, TensorRT plans) and references can be added later
without changing it, and anything computed from the model (reference trajectories) records it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tcc_model.errors import BundleError, safe_text
from tcc_model.utils import write_text_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.yaml"
MODEL_FILE_ROLE = "model"
DERIVED_FILE_ROLE = "derived"
REFERENCE_FILE_ROLE = "reference"
_ROLES = (MODEL_FILE_ROLE, DERIVED_FILE_ROLE, REFERENCE_FILE_ROLE)
#: Largest ``bundle.yaml`` read (real ones are a few KiB).
MAX_MANIFEST_BYTES = 4 << 20
_REEXPORT = "re-export the bundle with python -m tcc_model.export"
#: Top-level keys an inference engine needs, with their type (see :func:`check_inference_keys`).
INFERENCE_KEYS: dict[str, type | tuple[type, ...]] = {
    "bundle_id": str,
    "model": dict,
    "preprocess": dict,
    "embedding_size": int,
    "feature_shape": list,
    "variants": dict,
}

__all__ = ["BundleError"]  # re-exported from tcc_model.errors


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def compute_bundle_id(files: dict[str, dict[str, Any]]) -> str:
    """sha256 over ``name:sha256`` of the model-role entries of a manifest ``files`` table."""
    model = sorted(
        (name, entry["sha256"])
        for name, entry in files.items()
        if entry.get("role") == MODEL_FILE_ROLE
    )
    if not model:
        raise BundleError("bundle lists no model files; re-export it with tcc_model.export")
    digest = hashlib.sha256()
    for name, sha in model:
        digest.update(f"{name}:{sha}\n".encode())
    return digest.hexdigest()


def file_entry(bundle_dir: str | os.PathLike, name: str, role: str) -> dict[str, Any]:
    """Manifest entry (sha256, size, role) for ``bundle_dir/name``."""
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise BundleError(f"{path}: file to register in the bundle does not exist")
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role}


def write_manifest(bundle_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``bundle.yaml`` atomically, filling in ``format_version`` and ``bundle_id``.

    ``manifest["files"]`` must map file names (relative to ``bundle_dir``) to entries from
    :func:`file_entry`. Returns the manifest as written.
    """
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["bundle_id"] = compute_bundle_id(manifest.get("files", {}))
    ordered = {
        "format_version": manifest.pop("format_version"),
        "bundle_id": manifest.pop("bundle_id"),
        **manifest,
    }
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=100)
    write_text_atomic(Path(bundle_dir) / MANIFEST_NAME, text)
    return ordered


def read_manifest(bundle_dir: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read ``bundle.yaml``; with ``verify`` check format version, file presence and sha256.

    Raises :class:`BundleError` naming the file and the fix.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(
            f"{bundle_dir}: bundle directory does not exist; "
            "create one with `python -m tcc_model.export`"
        )
    if not path.is_file():
        raise BundleError(
            f"{path}: missing; {bundle_dir} is not a bundle "
            "(create one with `python -m tcc_model.export`)"
        )
    manifest = _load_yaml(path)
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{path}: format_version missing or not an integer; {_REEXPORT}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version} is newer than this tcc_model supports "
            f"({FORMAT_VERSION}); upgrade tcc_model or re-export with this version"
        )
    _check_files_table(path, manifest.get("files"))
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest


def _load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in ``path``; size, encoding and YAML errors become :class:`BundleError`."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{path}: {size} bytes, not a manifest (at most {MAX_MANIFEST_BYTES})"
            )
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise BundleError(f"{path}: not UTF-8 text (binary or damaged); {_REEXPORT}") from err
    except yaml.YAMLError as err:
        what = safe_text(" ".join(str(err).split()), limit=200)
        raise BundleError(f"{path}: not valid YAML ({what}); {_REEXPORT}") from err
    except OSError as err:
        raise BundleError(f"{path}: cannot be read ({safe_text(err)})") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a mapping at the top level; {_REEXPORT}")
    return manifest


def _check_files_table(path: Path, files: Any) -> None:
    """``files`` must map plain relative file names to ``{sha256: hex, role: ...}`` mappings."""
    if files is None:
        return
    if not isinstance(files, dict):
        raise BundleError(f"{path}: 'files' must be a mapping of file names; {_REEXPORT}")
    for name, entry in files.items():
        where = f"{path}: files entry {safe_text(name)!r}"
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise BundleError(f"{where}: not a plain file name inside the bundle; {_REEXPORT}")
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: must be a mapping with sha256 and role; {_REEXPORT}")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise BundleError(f"{where}: sha256 missing or not a hex digest; {_REEXPORT}")
        if entry.get("role") not in _ROLES:
            raise BundleError(f"{where}: role must be one of {_ROLES}; {_REEXPORT}")


def check_inference_keys(bundle_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Raise :class:`BundleError` unless ``manifest`` has the keys an engine needs, typed."""
    path = Path(bundle_dir) / MANIFEST_NAME
    for key, kind in INFERENCE_KEYS.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(
                f"{path}: {key!r} missing or not a {getattr(kind, '__name__', kind)}; {_REEXPORT}"
            )
    for name, variant in manifest["variants"].items():
        if not isinstance(variant, dict) or not all(
            isinstance(variant.get(part), str) for part in ("encoder", "head")
        ):
            raise BundleError(
                f"{path}: variant {safe_text(name)!r} must name its encoder and head files; "
                f"{_REEXPORT}"
            )


def verify_files(
    bundle_dir: str | os.PathLike, manifest: dict[str, Any], skip: Iterable[str] = ()
) -> None:
    """Check that every listed file (but ``skip``) exists and matches its sha256, and that
    ``bundle_id`` matches the model files."""
    bundle_dir = Path(bundle_dir)
    files: dict[str, dict[str, Any]] = manifest.get("files") or {}
    skipped = set(skip)
    for name in files:
        if name in skipped:
            continue
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(
                f"{safe_text(path)}: listed in {MANIFEST_NAME} but missing; "
                "copy the complete bundle directory or re-export it"
            )
        actual = sha256_file(path)
        if actual != files[name]["sha256"]:
            fix = (
                "rebuild the references (python -m tcc_model.reference)"
                if files[name].get("role") == REFERENCE_FILE_ROLE
                else "re-export the bundle"
            )
            raise BundleError(
                f"{safe_text(path)}: sha256 mismatch (manifest {files[name]['sha256'][:12]}..., "
                f"file {actual[:12]}...); the file is corrupt or was modified: {fix}"
            )
    if manifest.get("bundle_id") != compute_bundle_id(files):
        raise BundleError(
            f"{bundle_dir / MANIFEST_NAME}: bundle_id does not match the model "
            "files it lists; re-export the bundle"
        )


def register_files(
    bundle_dir: str | os.PathLike,
    names: Iterable[str],
    role: str = REFERENCE_FILE_ROLE,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add (or refresh) files already written into a bundle to its manifest.

    For modules that add to an exported bundle (e.g. reference trajectories). Model files cannot
    be registered this way: they define ``bundle_id``. ``extra`` keys are merged into the top
    level of the manifest. Returns the updated manifest.
    """
    if role == MODEL_FILE_ROLE:
        raise ValueError(
            "role='model' files are written only by tcc_model.export; "
            "use role='derived' or 'reference'"
        )
    names = list(names)
    manifest = read_manifest(bundle_dir, verify=False)
    verify_files(bundle_dir, manifest, skip=names)  # the files being (re)registered may change
    files = dict(manifest.get("files") or {})
    for name in names:
        if files.get(name, {}).get("role") == MODEL_FILE_ROLE:
            raise ValueError(f"{name!r} is a model file of the bundle and cannot be replaced")
        files[name] = file_entry(bundle_dir, name, role)
    manifest["files"] = files
    manifest.update(extra or {})
    return write_manifest(bundle_dir, manifest)
