"""TensorRT 10 plans from the ONNX graphs (import-guarded: needs ``tensorrt`` and a CUDA GPU).

Without them every entry point raises :class:`ExportError` saying what is missing; nothing is
faked. Not exercised by the CPU tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.bundle import DERIVED_FILE_ROLE, file_entry
from tcc_model.export.options import ENCODER_FILE, ENCODER_INPUT, HEAD_FILE, HEAD_INPUT, ExportError

TENSORRT_MAX_BATCH = 32


def tensorrt_unavailable() -> str | None:
    """None when TensorRT plans can be built here, else the reason they cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "the `tensorrt` Python package (TensorRT 10, `pip install tensorrt`) is not installed"
        )
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available (torch.cuda.is_available() is False)"
    return None


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`ExportError` saying why it cannot be used."""
    reason = tensorrt_unavailable()
    if reason:
        raise ExportError(
            f"--tensorrt needs TensorRT and a CUDA GPU: {reason}; export without --tensorrt "
            "and use the onnxruntime backend instead"
        )
    import tensorrt as trt

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
    stay allowed when ``fp16``.
    """
    trt = require_tensorrt()
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
    import torch

    if len(data) < batch_size:
        raise ExportError(
            f"INT8 calibration needs at least {batch_size} frames, got {len(data)}; "
            "raise --int8-calib"
        )

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

    return _EntropyCalibrator()


def export_tensorrt(
    bundle: Path,
    files: dict[str, dict[str, Any]],
    shapes: tuple[list[int], int, int],
    fp16: bool,
    int8_calibration: np.ndarray | None,
) -> dict[str, Any]:
    """Build plans next to the ONNX graphs (encoder INT8 when calibration is given).

    ``shapes`` = (feature shape ``[C, h, w]``, image size, context frames). Registers the plans
    in ``files`` and returns the manifest's ``tensorrt`` section.
    """
    import torch

    trt = require_tensorrt()
    feature_shape, size, k = shapes
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
