"""Training speed of a recipe, lever by lever, against the same-run GEMM peaks.

    python benchmarks/bench_train.py                                # config/train/sim_pouring.yaml
    python benchmarks/bench_train.py --threads 1 2 --steps 4 --json runs/bench_train.json
    python benchmarks/bench_train.py --config config/train/pouring.yaml --set model.encoder=vggm

For each thread count it measures, in one process: the fp32 and bf16 GEMM peaks (a square
matmul), then the recipe's training step with the old settings (plain encoding, 3x3 stem, fp32,
eager) and with each speed lever added in turn (``distinct_frames``, the ``patchify`` stem,
``compile``, ``amp``). Per variant: clips/s, the step's FLOPs (``FlopCounterMode``, forward +
backward), achieved GFLOP/s as a fraction of both peaks, and the per-step breakdown: data
(sampling and collating a batch from in-memory videos), encoder forward, head forward, loss,
backward, optimizer. ``--processes 2`` also runs the best variant in two 1-thread processes at
once (the alternative to one 2-thread process). Then, on one thread: the data pipeline as the
training runs it (``--pipeline-steps`` consecutive steps through the training's ``DataLoader``:
the old settings and the last variant with batches made in the training thread, and the last
variant with one data worker process on a second core), and the GEMM ceiling (each conv/linear
layer of the last variant alone, forward + backward at its training shape, for each of
``--ceiling-widths``). Speeds on a shared machine are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tcc_model.config import apply_overrides  # noqa: E402
from tcc_model.data.format import Episode, EpisodeLabels  # noqa: E402
from tcc_model.data.sampling import VideoClipDataset  # noqa: E402
from tcc_model.models import build_model, distinct_positions  # noqa: E402
from tcc_model.train.config import TrainingConfig, layer_config  # noqa: E402
from tcc_model.train.module import (  # noqa: E402
    TrainModule,
    amp_dtype_for,
    compile_embedder,
    frame_ids,
)
from tcc_model.train.order import collate_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("data", "encoder", "head", "loss", "backward", "optimizer")

#: The old settings (today's defaults before the levers), then one lever added per row.
LEVERS: list[tuple[str, list[str]]] = [
    ("old settings", ["train.distinct_frames=false", "model.stem=conv", "train.compile=false"]),
    ("+ distinct frames", ["train.distinct_frames=true"]),
    ("+ patchify stem", ["model.stem=patchify"]),
    ("+ compile", ["train.compile=true"]),
    ("+ bf16 autocast", ["train.amp=true"]),
]


def gemm_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of a ``size``-square matmul in ``dtype`` (best of repeated timings)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best, spent = float("inf"), 0.0
    while spent < seconds:
        tic = time.perf_counter()
        a @ b
        elapsed = time.perf_counter() - tic
        best, spent = min(best, elapsed), spent + elapsed
        if elapsed > 5 * seconds:  # an emulated dtype: one sample is enough
            break
    return 2 * size**3 / best / 1e9


def synthetic_clips(config: TrainingConfig, videos: int = 16, length: int = 120) -> Any:
    """A ``VideoClipDataset`` over in-memory random videos (decoded frames, as after preload)."""
    size = config.model.image_size
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(videos):
        labels = EpisodeLabels(
            video=f"v{i}.mp4", fps=12.0, num_frames=length, phase_names=["a", "b"]
        )
        labels.phase_ids = [int(t >= length // 2) for t in range(length)]
        episodes.append(Episode(f"v{i}", "train", Path(f"/bench/v{i}.json"), labels))
    clips = VideoClipDataset(
        episodes,
        num_frames=config.data.num_frames,
        context_frames=config.model.context_frames,
        context_stride=config.model.context_stride,
        sampling=config.data.sampling,
        sample_stride=config.data.sample_stride,
        augment=config.data.augment,
        tcn_positives=config.algo.uses_tcn_sampling,
        image_size=size,
    )
    for e in episodes:
        frames = rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
        clips.cache._frames[Path(e.video_path)] = frames
    return clips


class Variant:
    """The model, loss and optimizer of one configuration, with a timed step."""

    def __init__(self, config: TrainingConfig) -> None:
        torch.manual_seed(0)
        self.config = config
        self.clips = synthetic_clips(config)
        from tcc_model.algos import TrainingAlgo

        self.model = build_model(config.model)
        algo = TrainingAlgo(config.algo, config.model.embedding_size, num_phases=2)
        self.module = TrainModule(
            self.model,
            algo,
            config.algo.l2_weight,
            amp_dtype_for(torch.device("cpu"), config.train.amp),
            config.train.distinct_frames,
        ).train()
        if config.train.compile:
            compile_embedder(self.model)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=config.train.lr)
        self.batches = 0

    def batch(self) -> dict[str, torch.Tensor]:
        self.batches += 1
        keys = [(self.batches, i % len(self.clips)) for i in range(self.config.train.batch_size)]
        return collate_batch(self.clips, keys)

    def step(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One training step, timed by phase (mirrors ``TrainModule.forward``); ``batch``
        given: its preparation is not part of the step (``data`` is 0)."""
        times: dict[str, float] = {}
        tic = time.perf_counter()
        batch = self.batch() if batch is None else batch
        times["data"] = time.perf_counter() - tic
        m, cfg = self.model, self.config.model
        frames = batch["frames"]
        b, tk = frames.shape[:2]
        flat = frames.reshape(b * tk, *frames.shape[2:])
        amp = self.module.amp_dtype
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            tic = time.perf_counter()
            if self.module.distinct_frames:
                ids = frame_ids(batch["steps"], cfg.context_frames, cfg.context_stride)
                inverse, first = distinct_positions(ids)
                feats = m.encoder(flat[first])[inverse]
            else:
                feats = m.encoder(flat)
            times["encoder"] = time.perf_counter() - tic
            tic = time.perf_counter()
            k = cfg.context_frames
            emb = m.head(feats.reshape(b * (tk // k), k, *feats.shape[1:]))
            embs = emb.reshape(b, tk // k, -1).float()
            times["head"] = time.perf_counter() - tic
        tic = time.perf_counter()
        loss, _ = self.module.algo(embs, batch, torch.Generator().manual_seed(self.batches))
        from tcc_model.algos import l2_regularization

        loss = loss + l2_regularization(self.module._regularised, self.module.l2_weight)
        times["loss"] = time.perf_counter() - tic
        tic = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        times["backward"] = time.perf_counter() - tic
        tic = time.perf_counter()
        self.optimizer.step()
        times["optimizer"] = time.perf_counter() - tic
        return times

    def flops(self) -> float:
        """FLOPs of one step (forward + backward), counted by torch."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return float(counter.get_total_flops())


def measure_all(configs: list[TrainingConfig], steps: int, warmup: int) -> list[dict[str, Any]]:
    """Best-of-``steps`` phase times, clips/s and FLOPs of each config.

    The variants run interleaved (one step of each in turn), so that load from other processes
    hits all of them alike; the fastest step of each counts (load only adds time).
    """
    variants = [Variant(config) for config in configs]
    for variant in variants:  # compile, then one recompile for the varying distinct count
        for _ in range(max(warmup, 3) if variant.config.train.compile else warmup):
            variant.step()
    samples: list[list[dict[str, float]]] = [[] for _ in variants]
    for _ in range(steps):
        for variant, out in zip(variants, samples):
            cpu = time.process_time()
            times = variant.step()
            times["cpu"] = time.process_time() - cpu
            out.append(times)
    results = []
    for config, runs in zip(configs, samples):
        best = min(runs, key=lambda s: sum(s[p] for p in PHASES))
        step_s = sum(best[p] for p in PHASES)
        flops = _eager_flops(config)
        results.append(
            {
                "step_ms": 1000 * step_s,
                "clips_per_s": config.train.batch_size / step_s,
                "clips_per_cpu_s": config.train.batch_size
                / statistics.median(r["cpu"] for r in runs),
                "gflop_per_step": flops / 1e9,
                "gflops": flops / step_s / 1e9,
                "phases_ms": {p: 1000 * best[p] for p in PHASES},
            }
        )
    return results


def measure(config: TrainingConfig, steps: int, warmup: int) -> dict[str, Any]:
    """:func:`measure_all` of one config."""
    return measure_all([config], steps, warmup)[0]


def _eager_flops(config: TrainingConfig) -> float:
    """FLOPs of one eager step, counted on 2 videos and scaled to the batch (the convolutions
    are linear in the batch; the TCC loss, quadratic, is a negligible share)."""
    data = config.to_dict()
    data["train"]["compile"] = False
    data["train"]["batch_size"] = 2
    return Variant(TrainingConfig.from_dict(data)).flops() * config.train.batch_size / 2


def measure_pipeline(
    old: TrainingConfig, new: TrainingConfig, steps: int, warmup: int
) -> dict[str, float]:
    """clips/s of consecutive steps with batches from the training's own ``DataLoader`` (the
    step-keyed sampler): ``old`` and ``new`` with batches prepared in the training thread (one
    core: ``old``, ``new``), and ``new`` with one worker process preparing the next batch while
    the thread trains (``new_worker``: the recipe's ``data.num_workers: 1`` on a second core).
    Blocks of ``steps`` alternate twice; the faster block of each counts."""
    from tcc_model.train.loop import step_loader
    from tcc_model.train.order import StepBatchSampler

    runs = [("old", Variant(old), 0), ("new", Variant(new), 0)]
    runs.append(("new_worker", runs[1][1], 1))
    best: dict[str, float] = {}
    for _ in range(2):
        for key, variant, workers in runs:
            batch = variant.config.train.batch_size
            sampler = StepBatchSampler(0, warmup + steps, batch, len(variant.clips), seed=0)
            loader = step_loader(variant.clips, sampler, workers)
            batches = iter(loader)
            for _ in range(warmup):
                variant.step(next(batches))
            tic = time.perf_counter()
            for _ in range(steps):
                variant.step(next(batches))
            rate = steps * batch / (time.perf_counter() - tic)
            best[key] = max(best.get(key, 0.0), rate)
    return best


def layer_ceiling(config: TrainingConfig, repeats: int = 5) -> dict[str, Any]:
    """Each convolution and linear layer of ``config``'s model alone, forward + backward at the
    input shape it sees in a training step, under the step's autocast: the rate the step's GEMM
    work reaches when nothing else (data, elementwise ops, normalisation, the loss) costs time."""
    from torch.utils.flop_counter import FlopCounterMode

    variant = Variant(config)
    seen: dict[tuple[str, tuple[int, ...]], torch.nn.Module] = {}
    layers = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)

    def record(name: str) -> Any:
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            seen.setdefault((name, tuple(inputs[0].shape)), module)

        return hook

    handles = [
        m.register_forward_hook(record(name))
        for name, m in variant.model.named_modules()
        if isinstance(m, layers)
    ]
    variant.step()
    for handle in handles:
        handle.remove()
    amp = variant.module.amp_dtype
    rows = []
    for i, ((name, shape), module) in enumerate(seen.items()):
        # the first layer sees the images: no gradient to its input, as in training
        x = torch.randn(shape, requires_grad=i > 0)

        def run(module: torch.nn.Module = module, x: torch.Tensor = x) -> None:
            with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
                out = module(x)
            out.float().sum().backward()

        run()
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            run()
            times.append(time.perf_counter() - tic)
        flops = float(counter.get_total_flops())
        rows.append(
            {
                "layer": name,
                "shape": list(shape),
                "gflop": flops / 1e9,
                "ms": 1000 * min(times),
                "gflops": flops / min(times) / 1e9,
            }
        )
    total_flops = sum(r["gflop"] for r in rows)
    total_ms = sum(r["ms"] for r in rows)
    return {
        "width": config.model.light_width,
        "amp": amp is not None,
        "layers": rows,
        "gflop": total_flops,
        "ms": total_ms,
        "gflops": 1000 * total_flops / total_ms,
    }


def run_threads(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Peaks and every lever at ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    emulated = amp_dtype_for(torch.device("cpu"), True) is None  # slow: a smaller matrix
    peaks = {
        "fp32": gemm_peak(torch.float32),
        "bf16": gemm_peak(torch.bfloat16, size=512 if emulated else 1024),
    }
    rows: list[dict[str, Any]] = []
    configs, names = [], []
    data = layer_config("folder:bench", args.config, None, args.set).to_dict()
    for name, overrides in LEVERS:
        if name not in args.levers:
            continue
        data = apply_overrides(TrainingConfig, data, overrides)
        config = TrainingConfig.from_dict(data)
        if config.train.amp and amp_dtype_for(torch.device("cpu"), True) is None:
            rows.append({"variant": name, "skipped": "no native bf16 on this CPU"})
            data = apply_overrides(TrainingConfig, data, ["train.amp=false"])
            continue
        configs.append(config)
        names.append(name)
    for name, result in zip(names, measure_all(configs, args.steps, args.warmup)):
        rows.append({"variant": name, **result})
    measured = [r for r in rows if "clips_per_s" in r]
    for row in rows:
        if "clips_per_s" in row:
            print(_row(row["variant"], row, measured[0], peaks), flush=True)
        else:
            print(f"| {row['variant']} | skipped: {row['skipped']} |", flush=True)
    return {"threads": threads, "peaks_gflops": peaks, "rows": rows, "final": data}


def _row(name: str, r: dict[str, Any], base: dict[str, Any], peaks: dict[str, float]) -> str:
    ph = r["phases_ms"]
    return (
        f"| {name} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / base['clips_per_s']:.2f}x | "
        f"{r['clips_per_cpu_s']:.2f} | "
        f"{r['gflop_per_step']:.1f} | {r['gflops']:.1f} | {r['gflops'] / peaks['fp32']:.0%} | "
        f"{r['gflops'] / peaks['bf16']:.0%} | " + " / ".join(f"{ph[p]:.0f}" for p in PHASES) + " |"
    )


def _print_ceiling(ceilings: list[dict[str, Any]], peaks: dict[str, float], key: str) -> None:
    """The layer table of the first width, then one line per width."""
    first = ceilings[0]
    print(
        f"\n## GEMM ceiling, 1 thread: each conv/linear layer alone, forward + backward "
        f"({'bf16 autocast' if first['amp'] else 'fp32'}), light_width {first['width']}"
    )
    print(f"| layer | input shape | GFLOP | ms | GFLOP/s | of {key} peak |")
    print("|---|---|---|---|---|---|")
    for r in first["layers"]:
        shape = "x".join(str(v) for v in r["shape"])
        print(
            f"| {r['layer']} | {shape} | {r['gflop']:.2f} | {r['ms']:.1f} | {r['gflops']:.0f} | "
            f"{r['gflops'] / peaks[key]:.0%} |"
        )
    for c in ceilings:
        print(
            f"light_width {c['width']}: layers alone {c['gflop']:.1f} GFLOP in {c['ms']:.0f} ms = "
            f"{c['gflops']:.0f} GFLOP/s = {c['gflops'] / peaks[key]:.0%} of the {key} peak"
        )


def run_processes(args: argparse.Namespace, final: dict[str, Any], count: int) -> float:
    """Total clips/s of ``count`` concurrent 1-thread processes running ``final``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--worker", json.dumps(final), "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config/train/sim_pouring.yaml"))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--levers",
        nargs="+",
        default=[name for name, _ in LEVERS],
        choices=[name for name, _ in LEVERS],
        metavar="LEVER",
        help="rows to measure, in order (default: all): " + ", ".join(n for n, _ in LEVERS),
    )
    p.add_argument("--processes", type=int, default=2, help="also N 1-thread processes (0: no)")
    p.add_argument(
        "--pipeline-steps",
        type=int,
        default=12,
        help="consecutive steps of the last variant on 1 thread with data prepared in the "
        "training thread vs by one worker process (0: skip)",
    )
    p.add_argument(
        "--ceiling-widths",
        type=int,
        nargs="*",
        default=[32, 64, 128],
        metavar="W",
        help="GEMM ceiling of the last variant's layers alone on 1 thread, per model.light_width",
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        torch.set_num_threads(1)
        config = TrainingConfig.from_dict(json.loads(args.worker))
        print(json.dumps(measure(config, args.steps, args.warmup)["clips_per_s"]))
        return 0
    print(
        f"# {Path(args.config).name} {' '.join(args.set)} | {platform.machine()} "
        f"{platform.processor() or ''} | {os.cpu_count()} cores | torch {torch.__version__} | "
        f"load {os.getloadavg()[0]:.1f}"
    )
    results = []
    for threads in args.threads:
        print(f"\n## {threads} thread(s)")
        print(
            "| variant | clips/s | vs old | clips/CPU-s | GFLOP/step | GFLOP/s | of fp32 peak "
            "| of bf16 peak | "
            "ms: " + " / ".join(PHASES) + " |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        result = run_threads(args, threads)
        peaks = result["peaks_gflops"]
        print(f"GEMM peaks: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
        results.append(result)
    summary: dict[str, Any] = {"threads": results}
    measured = [r for r in results[-1]["rows"] if "clips_per_s" in r]
    if args.processes > 1:
        total = run_processes(args, results[-1]["final"], args.processes)
        summary["processes"] = {"count": args.processes, "clips_per_s": total}
        print(f"\n{args.processes} processes x 1 thread (last variant): {total:.2f} clips/s")
    if len(results) > 1:
        one = [r for r in results[0]["rows"] if "clips_per_s" in r][-1]["clips_per_s"]
        many = measured[-1]["clips_per_s"]
        print(f"{results[-1]['threads']} threads vs 1 (last variant): {many / one:.2f}x")
    final = TrainingConfig.from_dict(results[-1]["final"])
    torch.set_num_threads(1)
    peaks = results[0]["peaks_gflops"]
    if args.pipeline_steps > 0:
        first = TrainingConfig.from_dict(
            apply_overrides(TrainingConfig, final.to_dict(), LEVERS[0][1] + ["train.amp=false"])
        )
        pipe = measure_pipeline(first, final, args.pipeline_steps, args.warmup)
        summary["pipeline"] = pipe
        print(
            f"\n## Data pipeline, 1 training thread, {args.pipeline_steps} consecutive steps\n"
            f"old settings, batches made in the training thread (1 core): {pipe['old']:.2f} "
            f"clips/s\nlast variant, the same: {pipe['new']:.2f} clips/s\n"
            f"last variant, one data worker process (2 cores, data.num_workers: 1): "
            f"{pipe['new_worker']:.2f} clips/s = {pipe['new_worker'] / pipe['new']:.2f}x the "
            f"1-core pipeline, {pipe['new_worker'] / pipe['old']:.2f}x the old settings"
        )
    if args.ceiling_widths:
        summary["ceiling"] = []
        key = "bf16" if amp_dtype_for(torch.device("cpu"), final.train.amp) else "fp32"
        for width in args.ceiling_widths:
            data = apply_overrides(TrainingConfig, final.to_dict(), [f"model.light_width={width}"])
            summary["ceiling"].append(layer_ceiling(TrainingConfig.from_dict(data)))
        _print_ceiling(summary["ceiling"], peaks, key)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
