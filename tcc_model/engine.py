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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.bundle import BundleError, check_inference_keys, read_manifest
from tcc_model.engine_backends import (  # noqa: F401  (re-exported)
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    HEAD_INPUT,
    HEAD_OUTPUT,
    REEXPORT,
    OnnxRuntimeRunner,
    Runner,
    TensorRTRunner,
    TorchRunner,
    default_model_builder,
    library_load_errors,
    make_ort_session,
)
from tcc_model.errors import wrap_errors
from tcc_model.preprocess import PreprocessConfig, context_indices, resize_frames

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
VARIANTS = ("fp32", "int8")
DEFAULT_CHUNK = 64


class InferenceEngine:
    """Numpy-in, numpy-out inference over a verified bundle (see :func:`load_bundle`)."""

    def __init__(
        self, bundle_dir: Path, manifest: dict[str, Any], runner: Runner, variant: str = "fp32"
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


def _choose_backend(backend: str, variant: str, use_gpu: bool, manifest: dict[str, Any]) -> str:
    """``backend`` itself, or for ``auto``: TensorRT on a GPU, else ONNX Runtime, else torch."""
    if backend != "auto":
        return backend
    if variant == "fp32" and use_gpu and _tensorrt_available(manifest) is None:
        return "tensorrt"
    try:
        import onnxruntime  # noqa: F401

        return "onnxruntime"
    except ImportError:
        return "torch"


def _open_runner(
    chosen: str,
    bundle: Path,
    manifest: dict[str, Any],
    variant: str,
    threads: int,
    device: str | None,
    device_name: str,
    model_builder: Callable[[dict[str, Any]], Any],
) -> Runner:
    """The runner of backend ``chosen``; BundleError when it cannot run ``variant`` here.

    ``device``: as given to :func:`load_bundle`; ``device_name``: the one it resolved to.
    """
    use_gpu = device_name.startswith("cuda")
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
        return TensorRTRunner(bundle, manifest, device_name)
    if chosen == "onnxruntime":
        return OnnxRuntimeRunner(
            bundle, manifest, variant, threads, use_gpu and _ort_gpu_available()
        )
    if variant != "fp32":
        raise BundleError(
            "backend 'torch' runs the fp32 weights only; pass variant='fp32' "
            "or use backend='onnxruntime' for int8"
        )
    import safetensors  # noqa: F401  (its SafetensorError, for library_load_errors)

    from tcc_model.utils import pick_device

    weights = bundle / str(manifest.get("weights") or "model.safetensors")
    with wrap_errors(BundleError, weights, REEXPORT, extra=library_load_errors()):
        return TorchRunner(bundle, manifest, threads, pick_device(device), model_builder)


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
    chosen = _choose_backend(backend, variant, use_gpu, manifest)
    builder = model_builder or default_model_builder
    runner = _open_runner(chosen, bundle, manifest, variant, threads, device, device_name, builder)
    with wrap_errors(BundleError, bundle / "bundle.yaml", REEXPORT):
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
