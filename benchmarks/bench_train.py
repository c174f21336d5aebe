"""Training throughput (clips/s) of an embedder on synthetic clips.

    python benchmarks/bench_train.py                       # light model, 112², CPU, tcc
    python benchmarks/bench_train.py --batch-sizes 2 4 8 --threads 2 --algo tcc+tcn
    python benchmarks/bench_train.py --encoder vggm --head paper_conv3d --image-size 224

One clip = one video of T main frames with k context frames (T*k images). A step is the forward
pass, the algorithm loss, backward and an Adam update, exactly as ``tcc_model.train`` runs them
(data loading excluded: the clips are random tensors already in memory).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tcc_model.algos import ALGOS, AlgoConfig, TrainingAlgo  # noqa: E402
from tcc_model.models import ModelConfig, build_model  # noqa: E402
from tcc_model.train import TrainModule  # noqa: E402
from tcc_model.utils import pick_device  # noqa: E402


def synthetic_batch(batch_size: int, steps: int, cfg: ModelConfig, device) -> dict:
    """Random clips shaped like ``VideoClipDataset`` batches (augmented: float 0..255)."""
    k, size = cfg.context_frames, cfg.image_size
    main = torch.sort(torch.rand(batch_size, 100).argsort(1)[:, :steps] + 1, dim=1).values
    return {
        "frames": torch.rand(batch_size, steps * k, size, size, 3, device=device) * 255,
        "steps": main.to(device),
        "seq_len": torch.full((batch_size,), 101, device=device),
        "phase_ids": (main // 25).to(device),
    }


def bench(args: argparse.Namespace, batch_size: int) -> dict[str, float]:
    device = pick_device(args.device)
    cfg = ModelConfig(encoder=args.encoder, head=args.head, image_size=args.image_size)
    algo_cfg = AlgoConfig(name=args.algo)
    num_steps = 2 * args.num_frames if algo_cfg.uses_tcn_sampling else args.num_frames
    model = build_model(cfg).to(device)
    algo = TrainingAlgo(algo_cfg, cfg.embedding_size, num_phases=4).to(device)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
    module = TrainModule(model, algo, algo_cfg.l2_weight, amp_dtype).train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = synthetic_batch(batch_size, num_steps, cfg, device)
    times = []
    for i in range(args.warmup + args.iters):
        tic = time.perf_counter()
        loss, _ = module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    step_s = statistics.median(times)
    return {
        "batch_size": batch_size,
        "ms_per_step": 1000 * step_s,
        "best_ms": 1000 * min(times),
        "clips_per_s": batch_size / step_s,
        "images_per_s": batch_size * num_steps * cfg.context_frames / step_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="light")
    p.add_argument("--head", default="light")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--algo", default="tcc", choices=ALGOS)
    p.add_argument("--num-frames", type=int, default=20, help="T main frames per clip")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"# {args.encoder}+{args.head} {args.image_size}² algo={args.algo} T={args.num_frames} "
        f"k=2 device={device} ({where or platform.machine()}) threads={args.threads} "
        f"amp={args.amp} torch={torch.__version__}"
    )
    print("| batch (videos) | ms/step (median) | best ms | clips/s | images/s |")
    print("|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        r = bench(args, batch_size)
        print(
            f"| {r['batch_size']} | {r['ms_per_step']:.1f} | {r['best_ms']:.1f} | "
            f"{r['clips_per_s']:.2f} | {r['images_per_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
