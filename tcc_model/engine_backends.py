"""The runners behind :class:`tcc_model.engine.InferenceEngine`: ONNX Runtime, PyTorch, TensorRT.

Each runner turns prepared numpy input into the encoder's features or the head's embeddings.
Loading errors of the libraries underneath become :class:`~tcc_model.errors.BundleError` naming
the file (see :func:`library_load_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcc_model.bundle import BundleError
from tcc_model.errors import wrap_errors

ENCODER_INPUT, ENCODER_OUTPUT = "frames", "features"
HEAD_INPUT, HEAD_OUTPUT = "context_features", "embeddings"
REEXPORT = (
    "the bundle is damaged or of another version; re-export it with python -m tcc_model.export"
)


def library_load_errors() -> tuple[type[BaseException], ...]:
    """What ONNX Runtime, safetensors, protobuf and torch raise on a damaged model file.

    ONNX Runtime's errors (``InvalidProtobuf``, ``Fail``, ...) are plain ``Exception``
    subclasses, so :func:`tcc_model.errors.wrap_errors` needs them named. Only modules already
    imported are looked at (this never imports torch).
    """
    import sys

    found: list[type[BaseException]] = [RuntimeError]
    ort_state = sys.modules.get("onnxruntime.capi.onnxruntime_pybind11_state")
    if ort_state is not None:
        found += [
            obj
            for obj in vars(ort_state).values()
            if isinstance(obj, type) and issubclass(obj, Exception)
        ]
    for module, name in (("safetensors", "SafetensorError"), ("google.protobuf.message", "Error")):
        obj = getattr(sys.modules.get(module), name, None)
        if isinstance(obj, type) and issubclass(obj, Exception):
            found.append(obj)
    return tuple(found)


def make_ort_session(
    path: str | os.PathLike, threads: int = 1, providers: Sequence[Any] | None = None
) -> Any:
    """ONNX Runtime session with ``threads`` intra-op threads and thread spinning disabled."""
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
    )


class Runner(Protocol):
    name: str

    def encode(self, frames: np.ndarray) -> np.ndarray: ...

    def head(self, context_features: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeRunner:
    """Encoder and head as two ONNX Runtime sessions."""

    def __init__(
        self, bundle: Path, manifest: dict[str, Any], variant: str, threads: int, use_gpu: bool
    ) -> None:
        import onnxruntime as ort

        files = manifest["variants"][variant]
        available = ort.get_available_providers()
        providers: list[Any] = []
        if use_gpu and "TensorrtExecutionProvider" in available:
            cache = Path.home() / ".cache" / "tcc_model" / "ort_trt" / manifest["bundle_id"][:16]
            cache.mkdir(parents=True, exist_ok=True)
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)},
                )
            )
        if use_gpu and "CUDAExecutionProvider" in available:
            providers.append("CUDAExecutionProvider")
        providers.append("CPUExecutionProvider")
        self._encoder = _checked_session(
            bundle / files["encoder"], ENCODER_INPUT, threads, providers
        )
        self._head = _checked_session(bundle / files["head"], HEAD_INPUT, threads, providers)
        self.providers = self._encoder.get_providers()
        self.name = f"onnxruntime[{self.providers[0]}]"

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self._encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: frames})[0]

    def head(self, context_features: np.ndarray) -> np.ndarray:
        return self._head.run([HEAD_OUTPUT], {HEAD_INPUT: context_features})[0]


def _checked_session(path: Path, input_name: str, threads: int, providers: list[Any]) -> Any:
    """An ONNX Runtime session on ``path``; load errors and a wrong input name name the file."""
    import onnxruntime  # noqa: F401  (its error types, for library_load_errors)

    with wrap_errors(BundleError, path, REEXPORT, extra=library_load_errors()):
        session = make_ort_session(path, threads, providers)
    names = [i.name for i in session.get_inputs()]
    if names != [input_name]:
        raise BundleError(f"{path}: graph inputs {names}, expected [{input_name!r}]; {REEXPORT}")
    return session


def default_model_builder(manifest: dict[str, Any]) -> Any:
    from tcc_model.models import build_model

    return build_model(dict(manifest["model"]))


class TorchRunner:
    """The PyTorch model rebuilt from the manifest config and ``model.safetensors``."""

    def __init__(
        self,
        bundle: Path,
        manifest: dict[str, Any],
        threads: int,
        device: Any,
        model_builder: Callable[[dict[str, Any]], Any],
    ) -> None:
        import torch
        from safetensors.torch import load_model

        weights = manifest.get("weights")
        if not weights or weights not in (manifest.get("files") or {}):
            raise BundleError(
                f"{bundle}: the torch backend needs the weights file "
                "(model.safetensors) in the bundle; re-export it"
            )
        self._torch = torch
        self._device = torch.device(device)
        if self._device.type == "cpu":
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        model = model_builder(manifest)
        load_model(model, str(bundle / weights), strict=True, device=str(self._device))
        self._model = model.to(self._device).eval()
        self.name = f"torch[{self._device}]"

    def _run(self, module: Any, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = module(self._torch.from_numpy(x).to(self._device))
        return out.float().cpu().numpy()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self._run(self._model.encoder, frames)

    def head(self, context_features: np.ndarray) -> np.ndarray:
        return self._run(self._model.head, context_features)


class TensorRTRunner:
    """TensorRT 10 engines (``*.plan`` written by ``export --tensorrt``).

    Needs the ``tensorrt`` package and a CUDA GPU; not exercised on CPU-only machines.
    """

    def __init__(self, bundle: Path, manifest: dict[str, Any], device: Any) -> None:
        import tensorrt as trt
        import torch

        section = manifest["tensorrt"]
        self._torch = torch
        self._device = torch.device(device if device is not None else "cuda")
        self._stream = torch.cuda.Stream(self._device)
        self._dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.max_batch = int(section["max_batch"])
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._parts = {}
        for part in ("encoder", "head"):
            engine = runtime.deserialize_cuda_engine((bundle / section[part]).read_bytes())
            if engine is None:
                raise BundleError(
                    f"{bundle / section[part]}: TensorRT could not load the engine (built on "
                    f"{section.get('device_name')} with TensorRT {section.get('tensorrt_version')}"
                    "); rebuild it on this machine with `python -m tcc_model.export --tensorrt`"
                )
            self._parts[part] = (engine, engine.create_execution_context())
        self.name = f"tensorrt[{section['precision']}]"

    def _run(self, part: str, x: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
        torch = self._torch
        engine, context = self._parts[part]
        with torch.cuda.stream(self._stream):
            x_gpu = torch.from_numpy(x).to(self._device, non_blocking=False)
            context.set_input_shape(input_name, tuple(x_gpu.shape))
            out = torch.empty(
                tuple(context.get_tensor_shape(output_name)),
                dtype=self._dtypes[engine.get_tensor_dtype(output_name)],
                device=self._device,
            )
            context.set_tensor_address(input_name, x_gpu.data_ptr())
            context.set_tensor_address(output_name, out.data_ptr())
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT {part} inference failed")
        self._stream.synchronize()
        return out.float().cpu().numpy()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return chunked(
            lambda b: self._run("encoder", b, ENCODER_INPUT, ENCODER_OUTPUT), frames, self.max_batch
        )

    def head(self, context_features: np.ndarray) -> np.ndarray:
        return chunked(
            lambda b: self._run("head", b, HEAD_INPUT, HEAD_OUTPUT),
            context_features,
            self.max_batch,
        )


def chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
    if len(x) <= chunk:
        return fn(x)
    return np.concatenate([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])
