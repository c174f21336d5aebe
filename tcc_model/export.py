"""Export a trained model to a deployment bundle (ONNX, optional int8 and TensorRT).

``python -m tcc_model.export --checkpoint CKPT --out BUNDLE_DIR [--dataset NAME] [--quantize-int8]
[--int8-calib N] [--tensorrt] [--fp16] [--opset 17]``

Writes into ``BUNDLE_DIR`` (atomically: a temporary directory renamed at the end):

* ``encoder.onnx``: ``frames`` ``[N, S, S, 3]`` uint8 RGB → ``features`` ``[N, C, h, w]``
  (normalisation inside the graph), dynamic batch;
* ``head.onnx``: ``context_features`` ``[N, k, C, h, w]`` → ``embeddings`` ``[N, D]``,
  dynamic batch;
* ``model.safetensors``: the PyTorch weights (for the ``torch`` engine backend);
* ``encoder_int8.onnx`` with ``--quantize-int8`` (ONNX Runtime static quantisation, QDQ,
  per-channel int8 weights, uint8 activations; calibrated on real frames with ``--dataset``);
* ``*.plan`` TensorRT engines with ``--tensorrt`` (needs the ``tensorrt`` package and a CUDA GPU);
* ``bundle.yaml`` (see :mod:`tcc_model.bundle`).

Parity check: the ONNX graphs are run with ONNX Runtime (CPU) on check frames (the dataset's val
frames, else deterministic synthetic frames) and compared with PyTorch. The export fails when the
largest absolute embedding difference exceeds ``tolerance_rel`` (default 1e-3) times the largest
absolute PyTorch embedding value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
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
from tcc_model.preprocess import PreprocessConfig, context_indices, resize_frames

LOG = logging.getLogger(__name__)

DEFAULT_TOLERANCE_REL = 1e-3
ENCODER_FILE, HEAD_FILE, WEIGHTS_FILE = "encoder.onnx", "head.onnx", "model.safetensors"
ENCODER_INT8_FILE = "encoder_int8.onnx"
EXPORTERS = ("dynamo", "torchscript")
ENCODER_INPUT, ENCODER_OUTPUT = "frames", "features"
HEAD_INPUT, HEAD_OUTPUT = "context_features", "embeddings"
TENSORRT_MAX_BATCH = 32
_REQUIRED_MODEL_KEYS = (
    "image_size",
    "context_frames",
    "context_stride",
    "embedding_size",
    "mean",
    "std",
)


class ExportError(ValueError):
    """The model cannot be exported as asked (missing dependency, failed parity check, ...)."""


# ------------------------------------------------------------------------------------------------
# Frames for checks and calibration


def synthetic_frames(num_frames: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth RGB uint8 frames ``[num_frames, size, size, 3]`` (a drifting pattern).

    Used for the parity check when no dataset is given: smooth content exercises the convolutions
    like natural images do, unlike white noise.
    """
    rng = np.random.default_rng(seed)
    coarse = max(size // 8, 2)
    base = rng.integers(0, 256, (coarse, coarse, 3), dtype=np.uint8)
    drift = rng.integers(-40, 41, (num_frames, 1, 1, 3))
    steps = np.arange(num_frames)[:, None, None, None] / max(num_frames - 1, 1)
    coarse_seq = np.clip(base[None].astype(np.int64) + (drift * steps).astype(np.int64), 0, 255)
    frames = resize_frames(coarse_seq.astype(np.uint8), size)
    noise = rng.integers(-8, 9, frames.shape)
    return np.clip(frames.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _dataset_root(name: str) -> Path:
    """Resolve ``--dataset`` through ``tcc_model.data.registry`` (or a plain directory path)."""
    try:
        from tcc_model.data import registry
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "resolve_dataset"):
        return Path(registry.resolve_dataset(name))
    path = Path(name.removeprefix("folder:"))
    if path.is_dir():
        return path
    raise ExportError(
        f"--dataset {name!r}: not a directory and the dataset registry is not "
        "available; pass a dataset directory (folder:PATH)"
    )


def load_dataset_frames(
    name: str, size: int, num_check_frames: int, num_calib_frames: int, max_val_videos: int = 8
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str] | None]:
    """Check frames (one val episode), calibration frames (spread over train), val videos and
    the dataset's phase names.

    All frames are resized to ``size`` with :func:`resize_frames`, exactly as at inference.
    """
    from tcc_model.data.format import list_splits, load_split, read_manifest

    root = _dataset_root(name)
    try:
        phase_names = read_manifest(root).get("phase_names")
    except ValueError:
        phase_names = None
    splits = list_splits(root)
    val_split = "val" if "val" in splits else ("test" if "test" in splits else splits[0])
    calib_split = "train" if "train" in splits else val_split
    val_episodes = load_split(root, val_split)[:max_val_videos]
    val_videos = [resize_frames(ep.load_frames(), size) for ep in val_episodes]
    check = val_videos[0][:num_check_frames]
    calib_episodes = load_split(root, calib_split)
    per_episode = max(1, math.ceil(num_calib_frames / len(calib_episodes)))
    calib = []
    for ep in calib_episodes[:num_calib_frames]:
        frames = ep.load_frames()
        picks = np.linspace(0, len(frames) - 1, min(per_episode, len(frames))).round().astype(int)
        calib.append(resize_frames(frames[picks], size))
    return check, np.concatenate(calib)[:num_calib_frames], val_videos, phase_names


# ------------------------------------------------------------------------------------------------
# PyTorch reference and ONNX Runtime sessions


class _Encoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)


class _Head(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, context_features: torch.Tensor) -> torch.Tensor:
        return self.head(context_features)


@torch.inference_mode()
def torch_embed_frames(
    model: nn.Module, frames: np.ndarray, k: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch features ``[N, C, h, w]`` and causal-context embeddings ``[N, D]`` of a sequence."""
    feats = model.encoder(torch.from_numpy(np.ascontiguousarray(frames)))
    idx = torch.from_numpy(context_indices(np.arange(len(frames)), k, stride))
    emb = model.head(feats[idx])
    return feats.float().numpy(), emb.float().numpy()


def _ort_embed_frames(
    encoder_path: Path, head_path: Path, frames: np.ndarray, k: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    from tcc_model.engine import make_ort_session

    encoder = make_ort_session(encoder_path, threads=1, providers=["CPUExecutionProvider"])
    head = make_ort_session(head_path, threads=1, providers=["CPUExecutionProvider"])
    feats = encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: frames})[0]
    idx = context_indices(np.arange(len(frames)), k, stride)
    emb = head.run([HEAD_OUTPUT], {HEAD_INPUT: np.ascontiguousarray(feats[idx])})[0]
    return feats, emb


def _export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    opset: int,
    exporter: str,
) -> None:
    """Export with dynamic batch; ``exporter``: ``dynamo`` (torch.export) or ``torchscript``."""
    module = module.eval()
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes={input_name: {0: batch}},  # forward() argument named like the input
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            )


# ------------------------------------------------------------------------------------------------
# int8 (ONNX Runtime static quantisation)


def quantize_encoder_int8(
    encoder_path: Path, out_path: Path, calibration_frames: np.ndarray, batch_size: int = 8
) -> None:
    """Static int8 quantisation of the encoder graph (QDQ, per-channel weights) with ORT."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                np.array_split(
                    calibration_frames, max(1, math.ceil(len(calibration_frames) / batch_size))
                )
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {ENCODER_INPUT: np.ascontiguousarray(batch)}

    quantize_static(
        str(encoder_path),
        str(out_path),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


# ------------------------------------------------------------------------------------------------
# TensorRT (import-guarded; this code path needs a CUDA GPU and is not exercised by the CPU tests)


def _require_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as err:
        raise ExportError(
            "--tensorrt needs the `tensorrt` Python package (TensorRT 10, "
            "`pip install tensorrt`) and a CUDA GPU; export without --tensorrt "
            "and use the onnxruntime backend instead"
        ) from err
    if not torch.cuda.is_available():
        raise ExportError(
            "--tensorrt needs a CUDA GPU (torch.cuda.is_available() is False); "
            "export without --tensorrt on this machine"
        )
    return trt


def build_tensorrt_engine(
    onnx_path: Path,
    plan_path: Path,
    input_name: str,
    sample_shape: Sequence[int],
    *,
    fp16: bool,
    int8_calibration: np.ndarray | None = None,
    max_batch: int = TENSORRT_MAX_BATCH,
) -> None:
    """Build a serialized TensorRT 10 engine from an ONNX graph (dynamic batch 1..max_batch).

    ``sample_shape`` is the input shape without the batch dimension. ``int8_calibration``
    (network input values, batch first) turns on INT8 with an entropy calibrator; FP16 layers
    stay allowed when ``fp16``. Not exercised on CPU-only machines.
    """
    trt = _require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    profile = builder.create_optimization_profile()
    shape = tuple(int(s) for s in sample_shape)
    profile.set_shape(input_name, (1, *shape), (1, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if int8_calibration is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_trt_calibrator(trt, int8_calibration, min(8, max_batch))
        config.int8_calibrator = calibrator  # deprecated since TensorRT 10.1, still supported
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log)")
    plan_path.write_bytes(bytes(serialized))


def _make_trt_calibrator(trt: Any, data: np.ndarray, batch_size: int) -> Any:
    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            usable = len(data) - len(data) % batch_size
            self._batches = [
                torch.from_numpy(np.ascontiguousarray(b)).cuda()
                for b in np.split(data[:usable], usable // batch_size)
            ]
            self._next = 0
            self._current: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next >= len(self._batches):
                return None
            self._current = self._batches[self._next]
            self._next += 1
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    if len(data) < batch_size:
        raise ExportError(
            f"INT8 calibration needs at least {batch_size} frames, got {len(data)}; "
            "raise --int8-calib"
        )
    return _EntropyCalibrator()


# ------------------------------------------------------------------------------------------------
# Bundle export


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
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return versions


def _model_config_dict(model: nn.Module, model_config: dict[str, Any] | None) -> dict[str, Any]:
    if model_config is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            raise ValueError("model_config is required when the model has no `cfg.to_dict()`")
        model_config = cfg.to_dict()
    missing = [key for key in _REQUIRED_MODEL_KEYS if key not in model_config]
    if missing:
        raise ValueError(f"model_config lacks {missing}; it must hold {list(_REQUIRED_MODEL_KEYS)}")
    return _yaml_safe(dict(model_config))


def _kendalls_tau(embeddings: list[np.ndarray]) -> float | None:
    try:
        from tcc_model.evaluation import kendalls_tau
    except ImportError:
        return None
    return float(kendalls_tau(embeddings)) if len(embeddings) >= 2 else None


def export_bundle(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    model_config: dict[str, Any] | None = None,
    phase_names: Sequence[str] | None = None,
    training_config: dict[str, Any] | None = None,
    check_frames: np.ndarray | None = None,
    check_source: str = "synthetic",
    calibration_frames: np.ndarray | None = None,
    val_videos: Sequence[np.ndarray] | None = None,
    opset: int = 17,
    exporter: str = "dynamo",
    quantize_int8: bool = False,
    tensorrt: bool = False,
    fp16: bool = False,
    tolerance_rel: float = DEFAULT_TOLERANCE_REL,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export an ``Embedder`` (``.encoder``, ``.head``) to a bundle; return its manifest.

    ``check_frames``: one RGB uint8 sequence at ``image_size`` for the parity check (default:
    :func:`synthetic_frames`). ``calibration_frames``: int8 calibration input (default: the check
    frames). ``val_videos``: sequences for Kendall's tau of int8 vs fp32. Raises
    :class:`ExportError` when ONNX and PyTorch disagree beyond ``tolerance_rel``.
    """
    if fp16 and not tensorrt:
        raise ValueError("fp16=True (--fp16) only applies to TensorRT engines; add --tensorrt")
    if tensorrt:
        _require_tensorrt()  # fail before any slow work
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if tolerance_rel <= 0:
        raise ValueError(f"tolerance_rel must be > 0, got {tolerance_rel}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out {out_dir}: exists and is not empty; choose a new directory "
                "or pass --overwrite"
            )
        if not (out_dir / MANIFEST_NAME).is_file():
            raise ExportError(f"--out {out_dir}: not a bundle directory; refusing to overwrite it")
    cfg = _model_config_dict(model, model_config)
    size, k, stride = int(cfg["image_size"]), int(cfg["context_frames"]), int(cfg["context_stride"])
    preprocess = PreprocessConfig(
        image_size=size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        color_order="rgb",
        context_frames=k,
        context_stride=stride,
    )
    if check_frames is None:
        check_frames = synthetic_frames(max(2 * stride * (k - 1), 16), size)
        check_source = "synthetic"
    check_frames = resize_frames(np.asarray(check_frames), size)
    calibration_frames = (
        check_frames
        if calibration_frames is None
        else resize_frames(np.asarray(calibration_frames), size)
    )

    model = model.eval().cpu()
    ref_feats, ref_emb = torch_embed_frames(model, check_frames, k, stride)
    feature_shape = list(ref_feats.shape[1:])

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        example_frames = torch.from_numpy(np.ascontiguousarray(check_frames[:2]))
        _export_onnx(
            _Encoder(model),
            example_frames,
            tmp / ENCODER_FILE,
            ENCODER_INPUT,
            ENCODER_OUTPUT,
            opset,
            exporter,
        )
        example_ctx = torch.from_numpy(ref_feats[context_indices(np.arange(2), k, stride)])
        _export_onnx(
            _Head(model), example_ctx, tmp / HEAD_FILE, HEAD_INPUT, HEAD_OUTPUT, opset, exporter
        )
        from safetensors.torch import save_model

        save_model(model, str(tmp / WEIGHTS_FILE))
        for name in (ENCODER_FILE, HEAD_FILE, WEIGHTS_FILE):
            files[name] = file_entry(tmp, name, MODEL_FILE_ROLE)

        onnx_feats, onnx_emb = _ort_embed_frames(
            tmp / ENCODER_FILE, tmp / HEAD_FILE, check_frames, k, stride
        )
        scale = float(np.abs(ref_emb).max())
        max_diff = float(np.abs(onnx_emb - ref_emb).max())
        tolerance = tolerance_rel * max(scale, 1e-6)
        verification = {
            "frames": check_source,
            "num_frames": len(check_frames),
            "max_abs_diff_embeddings": max_diff,
            "max_abs_diff_features": float(np.abs(onnx_feats - ref_feats).max()),
            "embedding_scale_max_abs": scale,
            "tolerance_rel": tolerance_rel,
            "tolerance_abs": tolerance,
            "passed": max_diff <= tolerance,
        }
        if max_diff > tolerance:
            raise ExportError(
                f"ONNX and PyTorch embeddings differ by {max_diff:.3g} > tolerance {tolerance:.3g} "
                f"({tolerance_rel:g} x max |embedding| {scale:.3g}); check the model for "
                "export-unsafe operations or try another --opset"
            )
        LOG.info("ONNX parity: max |diff| %.3g (tolerance %.3g)", max_diff, tolerance)

        variants: dict[str, Any] = {"fp32": {"encoder": ENCODER_FILE, "head": HEAD_FILE}}
        if quantize_int8:
            quantize_encoder_int8(tmp / ENCODER_FILE, tmp / ENCODER_INT8_FILE, calibration_frames)
            files[ENCODER_INT8_FILE] = file_entry(tmp, ENCODER_INT8_FILE, DERIVED_FILE_ROLE)
            q_feats, q_emb = _ort_embed_frames(
                tmp / ENCODER_INT8_FILE, tmp / HEAD_FILE, check_frames, k, stride
            )
            accuracy: dict[str, Any] = {
                "frames": check_source,
                "calibration_frames": len(calibration_frames),
                "max_abs_diff_features_rel": float(
                    np.abs(q_feats - ref_feats).max() / max(float(np.abs(ref_feats).max()), 1e-12)
                ),
                "max_abs_diff_embeddings": float(np.abs(q_emb - ref_emb).max()),
                "rel_rms_diff_embeddings": float(
                    np.sqrt(np.mean((q_emb - ref_emb) ** 2))
                    / max(np.sqrt(np.mean(ref_emb**2)), 1e-12)
                ),
            }
            if val_videos:
                fp32 = [
                    _ort_embed_frames(tmp / ENCODER_FILE, tmp / HEAD_FILE, v, k, stride)[1]
                    for v in val_videos
                ]
                int8 = [
                    _ort_embed_frames(tmp / ENCODER_INT8_FILE, tmp / HEAD_FILE, v, k, stride)[1]
                    for v in val_videos
                ]
                accuracy["kendalls_tau_val_fp32"] = _kendalls_tau(fp32)
                accuracy["kendalls_tau_val_int8"] = _kendalls_tau(int8)
                accuracy["val_videos"] = len(val_videos)
            variants["int8"] = {
                "encoder": ENCODER_INT8_FILE,
                "head": HEAD_FILE,
                "accuracy": accuracy,
            }

        trt_section = None
        if tensorrt:
            trt_section = _export_tensorrt(
                tmp,
                files,
                feature_shape,
                size,
                k,
                fp16,
                calibration_frames if quantize_int8 else None,
            )

        manifest: dict[str, Any] = {
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model": cfg,
            "preprocess": _yaml_safe(preprocess.to_dict()),
            "embedding_size": int(ref_emb.shape[1]),
            "feature_shape": feature_shape,
            "phase_names": list(phase_names) if phase_names is not None else None,
            "training": _yaml_safe(training_config or {}),
            "versions": _versions(),
            "export": {"exporter": exporter, "opset": opset},
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
            "files": files,
        }
        manifest = write_manifest(tmp, _yaml_safe(manifest))
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


def _export_tensorrt(
    bundle: Path,
    files: dict[str, dict[str, Any]],
    feature_shape: list[int],
    size: int,
    k: int,
    fp16: bool,
    int8_calibration: np.ndarray | None,
) -> dict[str, Any]:
    """Build TensorRT plans next to the ONNX graphs (encoder INT8 when calibration is given)."""
    trt = _require_tensorrt()
    precision = "int8" if int8_calibration is not None else ("fp16" if fp16 else "fp32")
    encoder_plan, head_plan = f"encoder_{precision}.plan", f"head_{'fp16' if fp16 else 'fp32'}.plan"
    build_tensorrt_engine(
        bundle / ENCODER_FILE,
        bundle / encoder_plan,
        ENCODER_INPUT,
        (size, size, 3),
        fp16=fp16,
        int8_calibration=int8_calibration,
    )
    build_tensorrt_engine(
        bundle / HEAD_FILE, bundle / head_plan, HEAD_INPUT, (k, *feature_shape), fp16=fp16
    )
    for name in (encoder_plan, head_plan):
        files[name] = file_entry(bundle, name, DERIVED_FILE_ROLE)
    return {
        "encoder": encoder_plan,
        "head": head_plan,
        "precision": precision,
        "max_batch": TENSORRT_MAX_BATCH,
        "tensorrt_version": trt.__version__,
        "device_name": torch.cuda.get_device_name(),
        "note": "TensorRT plans only run on the GPU model and TensorRT version that built them",
    }


# ------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.export", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--dataset", help="dataset NAME for real check/calibration frames and val tau")
    p.add_argument(
        "--quantize-int8",
        action="store_true",
        help="also write encoder_int8.onnx (ORT static int8) and its accuracy cost",
    )
    p.add_argument(
        "--int8-calib",
        type=int,
        default=64,
        metavar="N",
        help="number of int8 calibration frames (default 64)",
    )
    p.add_argument("--tensorrt", action="store_true", help="build TensorRT engines (CUDA GPU)")
    p.add_argument("--fp16", action="store_true", help="FP16 TensorRT engines")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch ONNX exporter (default dynamo; torchscript is the legacy one)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_REL,
        help="max ONNX-vs-PyTorch |diff| relative to max |embedding| (default 1e-3)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.int8_calib < 1:
            raise ValueError(f"--int8-calib must be >= 1, got {args.int8_calib}")
        if not Path(args.checkpoint).is_file():
            raise ValueError(f"--checkpoint {args.checkpoint}: file not found")
        from tcc_model.checkpoint import load_model

        model, ckpt = load_model(args.checkpoint, device="cpu")
        config = ckpt.get("config") or {}
        cfg = model.cfg.to_dict() if hasattr(getattr(model, "cfg", None), "to_dict") else None
        cfg = cfg or config.get("model")
        check = calib = None
        val_videos: list[np.ndarray] | None = None
        source, dataset_phases = "synthetic", None
        if args.dataset:
            check, calib, val_videos, dataset_phases = load_dataset_frames(
                args.dataset,
                int(cfg["image_size"]),
                num_check_frames=64,
                num_calib_frames=args.int8_calib,
            )
            source = f"dataset:{args.dataset}"
        phase_names = (
            config.get("phase_names")
            or (config.get("data") or {}).get("phase_names")
            or dataset_phases
        )
        training = {key: value for key, value in config.items() if key != "model"}
        training["step"] = ckpt.get("step")
        training["checkpoint"] = str(args.checkpoint)
        manifest = export_bundle(
            model,
            args.out,
            model_config=cfg,
            phase_names=phase_names,
            training_config=training,
            check_frames=check,
            check_source=source,
            calibration_frames=calib,
            val_videos=val_videos,
            opset=args.opset,
            exporter=args.exporter,
            quantize_int8=args.quantize_int8,
            tensorrt=args.tensorrt,
            fp16=args.fp16,
            tolerance_rel=args.tolerance,
            overwrite=args.overwrite,
        )
    except ValueError as err:  # BundleError, ExportError, DatasetError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    ver = manifest["verification"]
    print(
        f"wrote {args.out} (bundle_id {manifest['bundle_id'][:12]}); ONNX vs PyTorch max |diff| "
        f"{ver['max_abs_diff_embeddings']:.3g} <= {ver['tolerance_abs']:.3g} on {ver['frames']}"
    )
    if "int8" in manifest["variants"]:
        print(f"int8 accuracy cost: {manifest['variants']['int8']['accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
