"""In-process stages of ``benchmarks/gpu_check.py``: environment, GEMM peak, parity, profile."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from gpu_check_common import ABSENT_ON_DEVICE, Check, StageError

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "opencv-python-headless",
    "safetensors",
    "pyyaml",
    "tensorboard",
    "scipy",
    "scikit-learn",
)
#: Kernel names of convolutions and matrix products (cuDNN, cuBLAS, CUTLASS, oneDNN).
MATRIX_KERNELS = ("conv", "gemm", "cutlass", "xmma", "wgmma", "sm90", "cudnn", "mm", "addmm")


def _sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (CPU rates are tiny in TFLOP/s)."""
    return float(f"{value:.{digits}g}")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: Any, warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` calls (synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        tic = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - tic)
    return times


def environment(check: Check) -> dict[str, Any]:
    """Machine, GPU, driver, torch/CUDA/cuDNN and package versions; absent optional packages."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": versions,
        "absent": [m for m in ABSENT_ON_DEVICE if not _importable(m)],
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _git_commit(check),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "bf16_supported": torch.cuda.is_bf16_supported(),  # --amp: bf16, else fp16
        }
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        smi = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        result["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    import onnxruntime

    result["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if check.on_cuda and not torch.cuda.is_available():
        raise StageError("--device cuda but torch sees no CUDA device", **result)
    return result


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - ImportError, or a broken install: absent either way
        return False
    return True


def _git_commit(check: Check) -> str | None:
    if not (check.repo / ".git").exists() or not shutil.which("git"):
        return None
    done = subprocess.run(
        ["git", "-C", str(check.repo), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def gemm_peak(check: Check) -> dict[str, Any]:
    """bf16 matrix-product rate measured now: the peak the training numbers are compared to."""
    import torch

    device = torch.device(check.device)
    n = check.settings.gemm_size
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    times = _timed(lambda: a @ b, device, warmup=3, iters=10)
    best, median = min(times), statistics.median(times)
    flops = 2.0 * n**3
    return {
        "size": n,
        "tflops_median": _sig(flops / median / 1e12),
        "tflops_best": _sig(flops / best / 1e12),
        "peak_tflops": _sig(flops / median / 1e12),
    }


def _paper_model(check: Check):  # noqa: ANN202 - torch types imported lazily
    """The paper model exactly as ``paper_train`` configured it (from its ``config.yaml``)."""
    import yaml

    from tcc_model.models import ModelConfig, build_model

    path = check.work / "paper" / "config.yaml"
    if not path.is_file():
        raise StageError("no paper run config: paper_train did not start")
    config = yaml.safe_load(path.read_text())
    cfg = ModelConfig.from_dict({**config["model"], "backbone_weights": None})
    return build_model(cfg), config


def _model_step(model, frames, amp: bool, ids=None):  # noqa: ANN001, ANN202
    """One forward + backward of ``model`` on ``frames`` (a stand-in loss); ``ids``: the frame
    indices of ``train.distinct_frames`` (each distinct frame encoded once)."""
    import torch

    def step() -> None:
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=amp):
            embs = model(frames) if ids is None else model(frames, ids)
        embs.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def _flops(step: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def profile(check: Check) -> dict[str, Any]:
    """FLOPs per clip, model-only step time and the top kernels of the paper model.

    The model-only rate (forward + backward, no data, loss or optimiser) against the CLI's
    clips/s shows how much of a training step is outside the network; the kernel table shows
    where the device time goes inside it.
    """
    import torch

    device = torch.device(check.device)
    s = check.settings
    model, config = _paper_model(check)
    model = model.to(device).train()
    k = int(config["model"]["context_frames"])
    size = int(config["model"]["image_size"])
    shape = (s.paper_batch, s.paper_frames * k, size, size, 3)
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    distinct = bool(config["train"].get("distinct_frames", False))
    ids = _frame_ids(check, s.paper_batch, s.paper_frames, config["model"]) if distinct else None
    step = _model_step(model, frames, check.amp, ids)
    flops_per_clip = _flops(step) / s.paper_batch
    times = _timed(step, device, warmup=3, iters=s.profile_iters)
    median = statistics.median(times)
    result: dict[str, Any] = {
        "paper_distinct_frames": distinct,
        "paper_flops_per_clip": flops_per_clip,
        "paper_model_step_s": round(median, 5),
        "paper_model_clips_per_s": round(s.paper_batch / median, 2),
        "paper_model_tflops": _sig(flops_per_clip * s.paper_batch / median / 1e12),
    }
    model.encoder.to(memory_format=torch.channels_last)  # the 2-D part (the head is 3-D)
    times = _timed(step, device, warmup=2, iters=max(2, s.profile_iters // 2))
    result["paper_model_step_s_encoder_channels_last"] = round(statistics.median(times), 5)
    model.encoder.to(memory_format=torch.contiguous_format)
    if device.type == "cuda":  # a lever the trainer does not pull: cuDNN's algorithm search
        torch.backends.cudnn.benchmark = True
        times = _timed(step, device, warmup=3, iters=max(2, s.profile_iters // 2))
        result["paper_model_step_s_cudnn_benchmark"] = round(statistics.median(times), 5)
        torch.backends.cudnn.benchmark = False
    result.update(_kernel_table(step, device))
    result.update(_light_model_rate(check, device))
    return result


def _frame_ids(check: Check, batch: int, steps: int, model: dict[str, Any]):  # noqa: ANN202
    """Frame indices of clips sampled as training samples them (``offset_uniform``: sorted
    distinct main frames of a training video, each with its causal context frames)."""
    import numpy as np
    import torch

    from tcc_model.data.registry import load_dataset_split

    length = load_dataset_split(f"folder:{check.data}", "train")[0].num_frames
    rng = np.random.default_rng(0)
    main = np.sort([rng.choice(np.arange(1, length), steps, replace=False) for _ in range(batch)])
    k, stride = int(model["context_frames"]), int(model["context_stride"])
    offsets = stride * np.arange(k - 1, -1, -1)
    ids = np.maximum(main[:, :, None] - offsets, 0).reshape(batch, -1)
    return torch.from_numpy(ids).to(check.device)


def _kernel_table(step: Callable[[], None], device: Any) -> dict[str, Any]:
    """torch.profiler over three steps: the top operators and the matrix-kernel share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        _sync(device)
    events = prof.key_averages()
    on_gpu = device.type == "cuda"
    attr = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    sort = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    total = sum(getattr(e, attr, 0.0) for e in events)
    matrix = sum(
        getattr(e, attr, 0.0)
        for e in events
        if any(word in e.key.lower() for word in MATRIX_KERNELS)
    )
    try:
        table = events.table(sort_by=sort, row_limit=15, max_name_column_width=60)
    except (AttributeError, KeyError, ValueError):
        table = events.table(sort_by=attr, row_limit=15, max_name_column_width=60)
    return {
        "profile_time": "device" if on_gpu else "cpu",
        "matrix_kernel_share": round(matrix / total, 3) if total else None,
        "profile_table": table,
    }


def _light_model_rate(check: Check, device: Any) -> dict[str, Any]:
    """Model-only clips/s of the light model at the ``light_train`` batch (an upper bound)."""
    import torch
    import yaml

    from tcc_model.models import ModelConfig, build_model

    path = check.work / "light" / "config.yaml"
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text())
    model = build_model(ModelConfig.from_dict(config["model"])).to(device).train()
    s = check.settings
    k, size = int(config["model"]["context_frames"]), int(config["model"]["image_size"])
    frames_per_clip = int(config["data"]["num_frames"]) * k * 2  # TCN doubles the steps
    shape = (s.light_batch, frames_per_clip, size, size, 3)
    frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    step = _model_step(model, frames, check.amp)
    median = statistics.median(_timed(step, device, warmup=3, iters=s.profile_iters))
    return {"light_model_clips_per_s": round(s.light_batch / median, 1)}


def parity(check: Check) -> dict[str, Any]:
    """The exported bundle: ONNX Runtime vs torch on the CPU, and vs the training device.

    Embeds the first val episode's frames with both CPU backends and with the checkpoint's model
    on ``--device`` (fp32; on CUDA, TF32 convolutions may add ~1e-3).
    """
    import numpy as np

    from tcc_model.checkpoint import load_model
    from tcc_model.data.registry import load_dataset_split
    from tcc_model.embed import embed_frames
    from tcc_model.engine import load_bundle
    from tcc_model.preprocess import resize_frames

    bundle = check.work / "paper_bundle"
    if not (bundle / "bundle.yaml").is_file():
        raise StageError("no bundle: export did not finish")
    ort = load_bundle(bundle, backend="onnxruntime", device="cpu", threads=os.cpu_count() or 1)
    size = int(ort.manifest["model"]["image_size"])
    episode = load_dataset_split(f"folder:{check.data}", "val")[0]
    frames = resize_frames(episode.load_frames()[: check.settings.parity_frames], size)
    ref = ort.embed_frames(frames)
    scale = float(np.abs(ref).max()) or 1.0
    tch = load_bundle(bundle, backend="torch", device="cpu", threads=os.cpu_count() or 1)
    cpu_diff = float(np.abs(tch.embed_frames(frames) - ref).max())
    model, _ = load_model(check.work / "paper" / "checkpoints" / "last.pt", device=check.device)
    dev_diff = float(np.abs(embed_frames(model, frames, device=check.device) - ref).max())
    result = {
        "frames": len(frames),
        "embedding_scale": scale,
        "onnxruntime_vs_torch_cpu_rel": cpu_diff / scale,
        f"onnxruntime_cpu_vs_checkpoint_{check.device}_rel": dev_diff / scale,
        "tolerance_rel": 1e-3,
    }
    if cpu_diff / scale > 1e-3:
        raise StageError("ONNX Runtime and torch disagree beyond 1e-3 on the CPU", **result)
    return result
