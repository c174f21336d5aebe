"""Write a bundle: ONNX graphs, weights, optional int8/TensorRT variants and ``bundle.yaml``.

Everything is written into a temporary folder next to the destination and renamed into place
only when the parity check passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tcc_model import __version__
from tcc_model.bundle import (
    DERIVED_FILE_ROLE,
    MANIFEST_NAME,
    MODEL_FILE_ROLE,
    file_entry,
    write_manifest,
)
from tcc_model.export import int8, onnx_graphs, tensorrt, verify
from tcc_model.export.frames import synthetic_frames
from tcc_model.export.options import (
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_INT8_FILE,
    ENCODER_OUTPUT,
    HEAD_FILE,
    HEAD_INPUT,
    HEAD_OUTPUT,
    WEIGHTS_FILE,
    ExportError,
    ExportInputs,
    ExportOptions,
    split_legacy_kwargs,
)
from tcc_model.preprocess import PreprocessConfig, context_indices, resize_frames

LOG = logging.getLogger(__name__)
_REQUIRED_MODEL_KEYS = (
    "image_size",
    "context_frames",
    "context_stride",
    "embedding_size",
    "mean",
    "std",
)


@dataclass
class _Plan:
    """Everything derived from the model and inputs before any file is written."""

    cfg: dict[str, Any]
    preprocess: PreprocessConfig
    check_frames: np.ndarray
    check_source: str
    calibration_frames: np.ndarray
    reference: tuple[np.ndarray, np.ndarray]  # PyTorch (features, embeddings) of check_frames

    @property
    def context(self) -> tuple[int, int]:
        return self.preprocess.context_frames, self.preprocess.context_stride


def export_bundle(
    model: nn.Module,
    out_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    inputs: ExportInputs | None = None,
    *,
    progress: bool = False,
    **legacy: Any,
) -> dict[str, Any]:
    """Export an ``Embedder`` (``.encoder``, ``.head``) to a bundle folder; return its manifest.

    ``options`` say how (opset, exporter, int8, TensorRT, tolerance, overwrite); ``inputs`` what
    goes in besides the model (config, phase names, check/calibration frames, val videos).
    The keyword arguments of the former signature (``opset=``, ``phase_names=`` ...) are still
    accepted in place of both. ``progress`` prints a line per stage. Raises
    :class:`ExportError` when ONNX and PyTorch disagree beyond ``options.tolerance_rel``.
    """
    if legacy:
        if options is not None or inputs is not None:
            raise TypeError("pass either options/inputs or the former keyword arguments")
        options, inputs = split_legacy_kwargs(legacy)
    options, inputs = options or ExportOptions(), inputs or ExportInputs()
    options.check()
    if options.tensorrt:
        tensorrt.require_tensorrt()  # fail before any slow work
    out_dir = Path(out_dir)
    _check_destination(out_dir, options.overwrite)
    plan = _plan(model.eval().cpu(), inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        manifest = _write_bundle(tmp, model, plan, options, inputs, progress)
        tmp.chmod(0o755)  # mkdtemp/mkstemp create owner-only entries; bundles are shared read-only
        for child in tmp.iterdir():
            child.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    LOG.info("bundle %s written to %s", manifest["bundle_id"][:12], out_dir)
    return manifest


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a folder; choose a new path")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out {out_dir}: exists and is not empty; choose a new directory "
                "or pass --overwrite"
            )
        if not (out_dir / MANIFEST_NAME).is_file():
            raise ExportError(f"--out {out_dir}: not a bundle directory; refusing to overwrite it")


def _plan(model: nn.Module, inputs: ExportInputs) -> _Plan:
    cfg = _model_config_dict(model, inputs.model_config)
    size, k, stride = int(cfg["image_size"]), int(cfg["context_frames"]), int(cfg["context_stride"])
    preprocess = PreprocessConfig(
        image_size=size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        color_order="rgb",
        context_frames=k,
        context_stride=stride,
    )
    check, source = inputs.check_frames, inputs.check_source
    if check is None:
        check, source = synthetic_frames(max(2 * stride * (k - 1), 16), size), "synthetic"
    check = resize_frames(np.asarray(check), size)
    calib = inputs.calibration_frames
    calib = check if calib is None else resize_frames(np.asarray(calib), size)
    reference = onnx_graphs.torch_embed_frames(model, check, k, stride)
    return _Plan(cfg, preprocess, check, source, calib, reference)


@contextlib.contextmanager
def _stage(what: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from tcc_model.cli import stage

    with stage(what):
        yield


def _write_bundle(
    tmp: Path,
    model: nn.Module,
    plan: _Plan,
    options: ExportOptions,
    inputs: ExportInputs,
    progress: bool,
) -> dict[str, Any]:
    """Write every file of the bundle into ``tmp`` and return the manifest as written."""
    k, stride = plan.context
    files: dict[str, dict[str, Any]] = {}
    with _stage("exporting the ONNX graphs", progress):
        _write_model_files(tmp, model, plan, options)
    for name in (ENCODER_FILE, HEAD_FILE, WEIGHTS_FILE):
        files[name] = file_entry(tmp, name, MODEL_FILE_ROLE)
    with _stage("checking ONNX Runtime against PyTorch", progress):
        onnx_out = verify.ort_embed_frames(
            tmp / ENCODER_FILE, tmp / HEAD_FILE, plan.check_frames, k, stride
        )
        verification = verify.parity_report(
            plan.reference, onnx_out, options.tolerance_rel, plan.check_source
        )
    variants: dict[str, Any] = {"fp32": {"encoder": ENCODER_FILE, "head": HEAD_FILE}}
    if options.quantize_int8:
        with _stage("quantising the encoder to int8", progress):
            variants["int8"] = _write_int8(tmp, files, plan, inputs)
    trt_section = None
    if options.tensorrt:
        with _stage("building TensorRT plans", progress):
            shapes = (list(plan.reference[0].shape[1:]), plan.preprocess.image_size, k)
            calib = plan.calibration_frames if options.quantize_int8 else None
            trt_section = tensorrt.export_tensorrt(tmp, files, shapes, options.fp16, calib)
    manifest = _manifest(plan, options, inputs, variants, verification, trt_section)
    manifest["files"] = files
    return write_manifest(tmp, _yaml_safe(manifest))


def _write_model_files(tmp: Path, model: nn.Module, plan: _Plan, options: ExportOptions) -> None:
    from safetensors.torch import save_model

    k, stride = plan.context
    example_frames = torch.from_numpy(np.ascontiguousarray(plan.check_frames[:2]))
    onnx_graphs.export_onnx(
        onnx_graphs.EncoderGraph(model),
        example_frames,
        tmp / ENCODER_FILE,
        ENCODER_INPUT,
        ENCODER_OUTPUT,
        options.opset,
        options.exporter,
    )
    example_ctx = torch.from_numpy(plan.reference[0][context_indices(np.arange(2), k, stride)])
    onnx_graphs.export_onnx(
        onnx_graphs.HeadGraph(model),
        example_ctx,
        tmp / HEAD_FILE,
        HEAD_INPUT,
        HEAD_OUTPUT,
        options.opset,
        options.exporter,
    )
    save_model(model, str(tmp / WEIGHTS_FILE))


def _write_int8(
    tmp: Path, files: dict[str, dict[str, Any]], plan: _Plan, inputs: ExportInputs
) -> dict[str, Any]:
    int8.quantize_encoder_int8(tmp / ENCODER_FILE, tmp / ENCODER_INT8_FILE, plan.calibration_frames)
    files[ENCODER_INT8_FILE] = file_entry(tmp, ENCODER_INT8_FILE, DERIVED_FILE_ROLE)
    accuracy = int8.int8_accuracy(
        (tmp / ENCODER_FILE, tmp / ENCODER_INT8_FILE, tmp / HEAD_FILE),
        plan.reference,
        plan.check_frames,
        plan.context,
        plan.check_source,
        len(plan.calibration_frames),
        inputs.val_videos,
    )
    return {"encoder": ENCODER_INT8_FILE, "head": HEAD_FILE, "accuracy": accuracy}


def _manifest(
    plan: _Plan,
    options: ExportOptions,
    inputs: ExportInputs,
    variants: dict[str, Any],
    verification: dict[str, Any],
    trt_section: dict[str, Any] | None,
) -> dict[str, Any]:
    size, (k, _) = plan.preprocess.image_size, plan.context
    feature_shape = list(plan.reference[0].shape[1:])
    return {
        # datetime.UTC needs Python 3.11; the package supports 3.10
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "model": plan.cfg,
        "preprocess": _yaml_safe(plan.preprocess.to_dict()),
        "embedding_size": int(plan.reference[1].shape[1]),
        "feature_shape": feature_shape,
        "phase_names": list(inputs.phase_names) if inputs.phase_names is not None else None,
        "training": _yaml_safe(inputs.training_config or {}),
        "versions": _versions(),
        "export": {"exporter": options.exporter, "opset": options.opset},
        "io": {
            "encoder": {
                "input": ENCODER_INPUT,
                "input_dtype": "uint8",
                "input_shape": ["N", size, size, 3],
                "output": ENCODER_OUTPUT,
            },
            "head": {
                "input": HEAD_INPUT,
                "input_shape": ["N", k, *feature_shape],
                "output": HEAD_OUTPUT,
            },
        },
        "weights": WEIGHTS_FILE,
        "variants": variants,
        "tensorrt": trt_section,
        "verification": verification,
    }


def _yaml_safe(obj: Any) -> Any:
    """Plain-Python copy of ``obj`` (tuples → lists, numpy scalars → Python, Paths → str)."""
    if isinstance(obj, dict):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, bool):
        return obj
    for plain in (int, float, str):  # subclasses (e.g. torch's version string) → the base type
        if isinstance(obj, plain):
            return plain(obj)
    return str(obj)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    versions = {
        "tcc_model": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        import tensorrt as trt

        versions["tensorrt"] = trt.__version__
    except ImportError:
        pass
    return versions


def _model_config_dict(model: nn.Module, model_config: dict[str, Any] | None) -> dict[str, Any]:
    if model_config is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            raise ExportError("model_config is required when the model has no `cfg.to_dict()`")
        model_config = cfg.to_dict()
    missing = [key for key in _REQUIRED_MODEL_KEYS if key not in model_config]
    if missing:
        raise ExportError(
            f"model_config lacks {missing}; it must hold {list(_REQUIRED_MODEL_KEYS)}"
        )
    return _yaml_safe(dict(model_config))
