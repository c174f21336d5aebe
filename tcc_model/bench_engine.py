"""Benchmark the inference backends of a bundle.

``python -m tcc_model.bench_engine --bundle B [--backends onnxruntime,torch] [--threads 1,2]
[--batches 1,8] [--json bench_engine.json]``

Per backend, model variant (fp32, int8 when exported), thread count and batch size it times one
streaming step: encode ``batch`` frames and embed ``batch`` contexts from cached features. It
reports p50/p99 latency, frames/s, and the achieved GFLOP/s (FLOPs counted from the ONNX graphs:
Conv/Gemm/MatMul from their shapes) next to this machine's fp32 GEMM peak measured in the same
run (torch ``n × n`` matmul). Prints a Markdown table and writes JSON.

Latencies on a shared machine depend on what else runs: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.bundle import BundleError, check_inference_keys, read_manifest
from tcc_model.cli import add_bundle_arg, check_bundle, entry_point, print_written, stage
from tcc_model.engine import _tensorrt_available, library_load_errors, load_bundle
from tcc_model.errors import ConfigError, wrap_errors
from tcc_model.export.frames import synthetic_frames
from tcc_model.preprocess import context_indices

LOG = logging.getLogger(__name__)

_CONV_WEIGHT_INDEX = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul"}


# ------------------------------------------------------------------------------------------------
# FLOP counting


def count_flops(onnx_path: str | os.PathLike, batch: int = 1) -> int:
    """FLOPs (2 × multiply-accumulates) of Conv, Gemm and MatMul nodes for one forward pass.

    Dynamic input dimensions are set to ``batch``; shapes come from ONNX shape inference.
    Element-wise ops, pooling and normalisation are not counted (they are memory-bound and
    small next to the convolutions). Nodes whose shapes cannot be inferred are logged and skipped.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = batch
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]

    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in _CONV_WEIGHT_INDEX:
            weight = shapes.get(node.input[_CONV_WEIGHT_INDEX[node.op_type]])
            if out is None or weight is None:
                LOG.warning(
                    "count_flops: %s %r has unknown shapes; skipped", node.op_type, node.name
                )
                continue
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type == "Gemm" or node.op_type in _MATMUL_OPS:
            a = shapes.get(node.input[0])
            if out is None or a is None:
                LOG.warning(
                    "count_flops: %s %r has unknown shapes; skipped", node.op_type, node.name
                )
                continue
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            inner = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
            total += 2 * int(np.prod(out)) * int(inner)
    return total


# ------------------------------------------------------------------------------------------------
# Timing


def gemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a ``size × size`` torch matmul with ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up
        best = min(_time_once(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def _time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _time_step(
    engine: Any, new_frames: np.ndarray, contexts: np.ndarray, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Encoder and head wall times of ``repeats`` streaming steps (after ``warmup`` steps)."""
    enc_times, head_times = [], []
    for i in range(warmup + repeats):
        t_enc = _time_once(lambda: engine.encode_frames(new_frames))
        t_head = _time_once(lambda: engine.embed(contexts))
        if i >= warmup:
            enc_times.append(t_enc)
            head_times.append(t_head)
    return enc_times, head_times


def _percentiles_ms(times: Sequence[float] | np.ndarray) -> tuple[float, float]:
    arr = np.asarray(times) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _available_backends(manifest: dict[str, Any]) -> list[str]:
    backends = ["onnxruntime", "torch"]
    if _tensorrt_available(manifest) is None:
        backends.insert(0, "tensorrt")
    return backends


def _result_row(
    enc_times: Sequence[float], head_times: Sequence[float], flops_per_frame: float, batch: int
) -> dict[str, float]:
    """Latency percentiles, throughput and achieved GFLOP/s of one timed configuration."""
    p50, p99 = _percentiles_ms(np.add(enc_times, head_times))
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "encoder_p50_ms": _percentiles_ms(enc_times)[0],
        "head_p50_ms": _percentiles_ms(head_times)[0],
        "frames_per_s": batch / (p50 / 1e3),
        "gflop_per_frame": flops_per_frame / 1e9,
        "gflops": flops_per_frame * batch / (p50 / 1e3) / 1e9,
    }


def _machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """Platform, CPU count and the load averages before and after the benchmark."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }


def run_benchmark(
    bundle: str | os.PathLike,
    backends: Sequence[str] | None = None,
    threads: Sequence[int] = (1,),
    batches: Sequence[int] = (1, 8),
    repeats: int = 50,
    warmup: int = 5,
    gemm_size: int = 2048,
) -> dict[str, Any]:
    """Time every (backend, variant, threads, batch); return a JSON-ready report."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if not threads or min(threads) < 1 or not batches or min(batches) < 1:
        raise ConfigError(f"threads and batches must be positive, got {threads}, {batches}")
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    check_inference_keys(bundle, manifest)
    backends = list(backends) if backends else _available_backends(manifest)
    pre = manifest["preprocess"]
    k, stride, size = pre["context_frames"], pre["context_stride"], pre["image_size"]
    head_flops = _graph_flops(bundle / manifest["variants"]["fp32"]["head"])
    load_start = os.getloadavg()
    peaks = {str(t): gemm_peak_gflops(t, gemm_size) for t in threads}
    history = stride * (k - 1) + max(batches)
    frames = synthetic_frames(history, size)
    results = []
    for backend in backends:
        int8 = backend == "onnxruntime" and "int8" in manifest["variants"]
        for variant in ["fp32", "int8"] if int8 else ["fp32"]:
            encoder_flops = _graph_flops(bundle / manifest["variants"][variant]["encoder"])
            flops_per_frame = encoder_flops + head_flops
            for n_threads in threads:
                engine = load_bundle(bundle, backend=backend, threads=n_threads, variant=variant)
                cached = engine.encode_frames(frames)  # features of the whole history
                for batch in batches:
                    idx = context_indices(np.arange(history - batch, history), k, stride)
                    enc_times, head_times = _time_step(
                        engine, frames[-batch:], cached[idx], warmup, repeats
                    )
                    results.append(
                        {
                            "backend": backend,
                            "detail": engine.backend_detail,
                            "variant": variant,
                            "threads": n_threads,
                            "batch": batch,
                            **_result_row(enc_times, head_times, flops_per_frame, batch),
                            "gemm_peak_gflops": peaks[str(n_threads)],
                        }
                    )
    return {
        "bundle": str(bundle),
        "bundle_id": manifest["bundle_id"],
        "model": {key: manifest["model"].get(key) for key in ("encoder", "head", "image_size")},
        "gemm_size": gemm_size,
        "gemm_peak_gflops": peaks,
        "repeats": repeats,
        "machine": _machine(load_start),
        "results": results,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The report's results as a Markdown table (one row per configuration)."""
    header = (
        "| backend | variant | threads | batch | p50 ms | p99 ms | frames/s | encoder p50 ms "
        "| head p50 ms | GFLOP/frame | GFLOP/s | fp32 GEMM peak GFLOP/s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in report["results"]:
        lines.append(
            f"| {r['detail']} | {r['variant']} | {r['threads']} | {r['batch']} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['frames_per_s']:.1f} | "
            f"{r['encoder_p50_ms']:.2f} | {r['head_p50_ms']:.2f} | {r['gflop_per_frame']:.3f} | "
            f"{r['gflops']:.1f} | {r['gemm_peak_gflops']:.0f} |"
        )
    return "\n".join(lines)


def _graph_flops(path: Path) -> int:
    """:func:`count_flops` of a bundle's graph; a damaged graph raises :class:`BundleError`."""
    import google.protobuf.message  # noqa: F401  (its DecodeError, for library_load_errors)

    fix = "the bundle is damaged; re-export it with python -m tcc_model.export"
    with wrap_errors(BundleError, path, fix, extra=library_load_errors()):
        return count_flops(path)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.bench_engine",
        description="Benchmark the inference backends of a bundle.",
    )
    add_bundle_arg(p)
    p.add_argument("--backends", default="", help="comma-separated (default: all available)")
    p.add_argument("--threads", type=_int_list, default=[1], help="e.g. 1,2 (default 1)")
    p.add_argument("--batches", type=_int_list, default=[1, 8], help="default 1,8")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--gemm-size", type=int, default=2048)
    p.add_argument("--json", default="bench_engine.json", help="output JSON path")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bundle = check_bundle(args.bundle)
    with stage(f"benchmarking {bundle}"):
        report = run_benchmark(
            bundle,
            [b for b in args.backends.split(",") if b],
            args.threads,
            args.batches,
            args.repeats,
            args.warmup,
            args.gemm_size,
        )
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown_table(report))
    load = report["machine"]
    print(
        f"\nload average {load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f} on "
        f"{load['cpu_count']} CPUs"
    )
    print_written({"report": args.json})
    return 0


if __name__ == "__main__":
    entry_point(main)
