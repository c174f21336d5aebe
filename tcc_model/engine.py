"""Inference engines over an exported bundle: ONNX Runtime, TensorRT or PyTorch.

>>> engine = load_bundle("bundles/pouring", backend="auto", threads=1)
>>> features = engine.encode_frames(camera_frames)        # RGB uint8 [N, H, W, 3], any H, W
>>> embeddings = engine.embed(context_features)           # [N, k, C, h, w] -> [N, D]
>>> embeddings = engine.embed_frames(video)               # every frame with its causal context

Every backend takes the same bytes: frames are resized with
:func:`tcc_model.preprocess.resize_frames` and normalised inside the network, as in training.
``backend='auto'`` picks the fastest available one (tensorrt > onnxruntime with CUDA >
onnxruntime on CPU > torch) and logs its choice.

ONNX Runtime sessions run with ``threads`` intra-op threads and thread spinning disabled, so the
encoder and head sessions (and other processes) do not fight for the cores; one thread is the
safer default on a machine shared with a camera driver or UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcc_model.bundle import BundleError, check_inference_keys, read_manifest
from tcc_model.errors import wrap_errors
from tcc_model.preprocess import PreprocessConfig, context_indices, resize_frames

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
VARIANTS = ("fp32", "int8")
ENCODER_INPUT, ENCODER_OUTPUT = "frames", "features"
HEAD_INPUT, HEAD_OUTPUT = "context_features", "embeddings"
DEFAULT_CHUNK = 64
_REEXPORT = (
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


class _Runner(Protocol):
    name: str

    def encode(self, frames: np.ndarray) -> np.ndarray: ...

    def head(self, context_features: np.ndarray) -> np.ndarray: ...


class _OnnxRuntimeRunner:
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

    with wrap_errors(BundleError, path, _REEXPORT, extra=library_load_errors()):
        session = make_ort_session(path, threads, providers)
    names = [i.name for i in session.get_inputs()]
    if names != [input_name]:
        raise BundleError(f"{path}: graph inputs {names}, expected [{input_name!r}]; {_REEXPORT}")
    return session


def _default_model_builder(manifest: dict[str, Any]) -> Any:
    from tcc_model.models import build_model

    return build_model(dict(manifest["model"]))


class _TorchRunner:
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


class _TensorRTRunner:
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
        return _chunked(
            lambda b: self._run("encoder", b, ENCODER_INPUT, ENCODER_OUTPUT), frames, self.max_batch
        )

    def head(self, context_features: np.ndarray) -> np.ndarray:
        return _chunked(
            lambda b: self._run("head", b, HEAD_INPUT, HEAD_OUTPUT),
            context_features,
            self.max_batch,
        )


def _chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
    if len(x) <= chunk:
        return fn(x)
    return np.concatenate([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])


class InferenceEngine:
    """Numpy-in, numpy-out inference over a verified bundle (see :func:`load_bundle`)."""

    def __init__(
        self, bundle_dir: Path, manifest: dict[str, Any], runner: _Runner, variant: str = "fp32"
    ) -> None:
        self._bundle_dir = bundle_dir
        self._manifest = manifest
        self._runner = runner
        self._variant = variant
        self._preprocess = PreprocessConfig.from_dict(manifest["preprocess"])
        self._feature_shape = tuple(int(s) for s in manifest["feature_shape"])

    @property
    def backend(self) -> str:
        """Backend name, e.g. ``onnxruntime``, ``torch`` or ``tensorrt``."""
        return self._runner.name.split("[")[0]

    @property
    def backend_detail(self) -> str:
        """Backend with its execution target, e.g. ``onnxruntime[CPUExecutionProvider]``."""
        return self._runner.name

    @property
    def variant(self) -> str:
        """Model variant: ``fp32`` or ``int8`` (ONNX Runtime int8 encoder)."""
        return self._variant

    @property
    def manifest(self) -> dict[str, Any]:
        """The bundle's parsed ``bundle.yaml``."""
        return self._manifest

    @property
    def bundle_id(self) -> str:
        """sha256 over the bundle's model files (see :mod:`tcc_model.bundle`)."""
        return self._manifest["bundle_id"]

    @property
    def bundle_dir(self) -> Path:
        return self._bundle_dir

    @property
    def preprocess(self) -> PreprocessConfig:
        """Input size, mean/std, colour order and context frames/stride of the model."""
        return self._preprocess

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Per-frame feature shape ``(C, h, w)``."""
        return self._feature_shape  # type: ignore[return-value]

    @property
    def embedding_size(self) -> int:
        return int(self._manifest["embedding_size"])

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """RGB uint8 frames ``[N, H, W, 3]`` (or one ``[H, W, 3]``), any H, W → ``[N, C, h, w]``."""
        frames = _check_frames(frames)
        frames = resize_frames(frames, self._preprocess.image_size)
        return self._runner.encode(np.ascontiguousarray(frames))

    def embed(self, context_features: np.ndarray) -> np.ndarray:
        """Context features ``[N, k, C, h, w]`` (oldest first) → embeddings ``[N, D]``."""
        x = np.asarray(context_features)
        expected = (self._preprocess.context_frames, *self._feature_shape)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            dims = ", ".join(map(str, expected))
            raise ValueError(
                f"context_features must have shape [N, {dims}] (k context frames of "
                f"encode_frames output), got {tuple(x.shape)}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"context_features must be float32, got {x.dtype}")
        return self._runner.head(np.ascontiguousarray(x, dtype=np.float32))

    def embed_frames(self, frames: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
        """Embeddings ``[N, D]`` of a frame sequence, every frame with its causal context.

        Each frame is encoded once (in chunks of ``chunk``); contexts index the cached features
        with :func:`tcc_model.preprocess.context_indices`.
        """
        frames = _check_frames(frames)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        features = np.concatenate(
            [self.encode_frames(frames[i : i + chunk]) for i in range(0, len(frames), chunk)]
        )
        idx = context_indices(
            np.arange(len(frames)), self._preprocess.context_frames, self._preprocess.context_stride
        )
        return np.concatenate(
            [
                self._runner.head(np.ascontiguousarray(features[idx[i : i + chunk]]))
                for i in range(0, len(frames), chunk)
            ]
        )

    def __repr__(self) -> str:
        return (
            f"InferenceEngine(bundle={str(self._bundle_dir)!r}, backend={self.backend_detail}, "
            f"variant={self._variant}, bundle_id={self.bundle_id[:12]})"
        )


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise ValueError(
            f"frames must be a numpy array (RGB uint8 [N, H, W, 3]), got {type(frames).__name__}"
        )
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be RGB [N, H, W, 3] or [H, W, 3] with 3 channels, got "
            f"shape {tuple(frames.shape)}; convert grayscale/RGBA/BGR input to RGB"
        )
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 (0..255), got {frames.dtype}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) (float 0..1 images: x * 255 first)"
        )
    if len(frames) == 0:
        raise ValueError("frames is empty (N = 0)")
    return frames


def _tensorrt_available(manifest: dict[str, Any]) -> str | None:
    """None when the tensorrt backend can run, else the reason it cannot."""
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError:
        return "the `tensorrt` package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    if not manifest.get("tensorrt"):
        return "the bundle has no TensorRT engines (export with --tensorrt)"
    return None


def _default_device_name() -> str:
    """``"cuda"`` when ONNX Runtime's CUDA provider or TensorRT is usable, else ``"cpu"``."""
    if _ort_gpu_available():
        return "cuda"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "cpu"
    from tcc_model.utils import pick_device

    return str(pick_device())


def _ort_gpu_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def load_bundle(
    path: str | os.PathLike,
    backend: str = "auto",
    threads: int = 1,
    device: str | None = None,
    variant: str = "fp32",
    model_builder: Callable[[dict[str, Any]], Any] | None = None,
) -> InferenceEngine:
    """Verify a bundle (files, sha256, format version) and open it with ``backend``.

    ``threads``: intra-op CPU threads (ONNX Runtime per session; torch process-wide).
    ``device``: ``None`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    ``variant``: ``fp32`` or ``int8`` (the ONNX Runtime int8 encoder, when exported).
    ``model_builder``: ``manifest -> nn.Module`` for the torch backend (default
    :func:`tcc_model.models.build_model` on ``manifest["model"]``).
    Raises :class:`BundleError` for a bad bundle, unknown or unavailable backend or variant.
    """
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if variant not in VARIANTS:
        raise BundleError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    bundle = Path(path)
    manifest = read_manifest(bundle, verify=True)
    check_inference_keys(bundle, manifest)
    if variant not in manifest["variants"]:
        raise BundleError(
            f"{bundle}: no {variant!r} variant (available: "
            f"{sorted(manifest.get('variants', {}))}); export with --quantize-int8"
        )
    # Decide on the device without importing torch (a large import the ONNX Runtime path of the
    # live node does not need): a GPU counts when ONNX Runtime or TensorRT can use one.
    device_name = str(device) if device is not None else _default_device_name()
    use_gpu = device_name.startswith("cuda")
    chosen = backend
    if backend == "auto":
        if variant == "fp32" and use_gpu and _tensorrt_available(manifest) is None:
            chosen = "tensorrt"
        else:
            try:
                import onnxruntime  # noqa: F401

                chosen = "onnxruntime"
            except ImportError:
                chosen = "torch"
    if chosen == "tensorrt":
        reason = _tensorrt_available(manifest) or (None if use_gpu else f"device is {device!r}")
        if reason:
            raise BundleError(
                f"backend 'tensorrt' is unavailable: {reason}; use backend='onnxruntime' or 'auto'"
            )
        if variant != "fp32":
            raise BundleError(
                "backend 'tensorrt' uses the precision its engines were built with;"
                " pass variant='fp32'"
            )
        runner: _Runner = _TensorRTRunner(bundle, manifest, device_name)
    elif chosen == "onnxruntime":
        runner = _OnnxRuntimeRunner(
            bundle, manifest, variant, threads, use_gpu and _ort_gpu_available()
        )
    else:
        if variant != "fp32":
            raise BundleError(
                "backend 'torch' runs the fp32 weights only; pass variant='fp32' "
                "or use backend='onnxruntime' for int8"
            )
        import safetensors  # noqa: F401  (its SafetensorError, for library_load_errors)

        from tcc_model.utils import pick_device

        weights = bundle / str(manifest.get("weights") or "model.safetensors")
        with wrap_errors(BundleError, weights, _REEXPORT, extra=library_load_errors()):
            runner = _TorchRunner(
                bundle,
                manifest,
                threads,
                pick_device(device),
                model_builder or _default_model_builder,
            )
    with wrap_errors(BundleError, bundle / "bundle.yaml", _REEXPORT):
        engine = InferenceEngine(bundle, manifest, runner, variant)
    log = LOG.info if backend == "auto" else LOG.debug
    log(
        "bundle %s: backend %s (requested %s), variant %s, %d thread(s)",
        engine.bundle_id[:12],
        engine.backend_detail,
        backend,
        variant,
        threads,
    )
    return engine
