"""Benchmark the vectorised TCC loss against a per-pair Python loop of the same maths.

Times forward + backward of ``compute_alignment_loss`` (deterministic, all ordered pairs) and of a
loop that aligns one pair of videos at a time, as the reference implementation does.

    python benchmarks/bench_loss.py [--batch-size 8 --num-steps 20 --dim 128 --device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tcc_model.losses import LOSS_TYPES, SIMILARITY_TYPES, compute_alignment_loss
from tcc_model.utils import pick_device


def _pair_similarity(a: torch.Tensor, b: torch.Tensor, similarity_type: str, temperature: float):
    if similarity_type == "l2":
        sim = -torch.clamp((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, min=0)
    else:
        sim = a @ b.T
    return sim / a.shape[1] / temperature


def looped_alignment_loss(
    embs: torch.Tensor,
    steps: torch.Tensor,
    seq_lens: torch.Tensor,
    loss_type: str = "classification",
    similarity_type: str = "l2",
    temperature: float = 0.1,
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
) -> torch.Tensor:
    """Deterministic TCC loss with one Python iteration per ordered pair (normalised indices)."""
    num_videos, num_steps, _ = embs.shape
    all_logits, all_positions = [], []
    for i in range(num_videos):
        for j in range(num_videos):
            if i == j:
                continue
            alpha = torch.softmax(
                _pair_similarity(embs[i], embs[j], similarity_type, temperature), 1
            )
            all_logits.append(
                _pair_similarity(alpha @ embs[j], embs[i], similarity_type, temperature)
            )
            all_positions.append((steps[i] / seq_lens[i]).to(embs.dtype).expand(num_steps, -1))
    logits, positions = torch.cat(all_logits), torch.cat(all_positions)
    targets = torch.arange(num_steps, device=embs.device).repeat(len(all_logits))
    if loss_type == "classification":
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    beta = torch.softmax(logits, 1)
    true_time = positions.gather(1, targets[:, None])[:, 0]
    pred_time = (beta * positions).sum(1)
    if loss_type == "regression_mse":
        return ((true_time - pred_time) ** 2).mean()
    if loss_type == "regression_huber":
        return F.huber_loss(pred_time, true_time, delta=huber_delta)
    variance = (beta * (positions - pred_time[:, None]) ** 2).sum(1)
    return ((true_time - pred_time) ** 2 / variance + variance_lambda * variance.log()).mean()


def _time_ms(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    def synced() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        synced()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        synced()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--loss-type", choices=LOSS_TYPES, default="regression_mse_var")
    parser.add_argument("--similarity-type", choices=SIMILARITY_TYPES, default="l2")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: CUDA when available, else CPU")
    args = parser.parse_args(argv)
    for name in ("batch_size", "num_steps", "dim", "repeats"):
        if getattr(args, name) < (2 if name == "batch_size" else 1):
            parser.error(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")

    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(0)
    embs = torch.randn(args.batch_size, args.num_steps, args.dim, generator=gen).to(device)
    embs.requires_grad_(True)
    seq_lens = torch.randint(
        args.num_steps + 1, 4 * args.num_steps, (args.batch_size,), generator=gen
    )
    steps = torch.stack(
        [torch.randperm(int(n), generator=gen)[: args.num_steps].sort().values for n in seq_lens]
    )
    steps, seq_lens = steps.to(device), seq_lens.to(device)
    options = dict(loss_type=args.loss_type, similarity_type=args.similarity_type)

    def vectorised() -> torch.Tensor:
        return compute_alignment_loss(embs, args.batch_size, steps, seq_lens, **options)

    def looped() -> torch.Tensor:
        return looped_alignment_loss(embs, steps, seq_lens, **options)

    difference = abs(vectorised().item() - looped().item())
    if difference > 1e-4 * max(1.0, abs(looped().item())):
        print(f"error: vectorised and looped losses differ by {difference:.3g}", file=sys.stderr)
        return 1

    def run(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            embs.grad = None
            loss_fn().backward()

        return step

    vec_ms = _time_ms(run(vectorised), device, args.repeats, args.warmup)
    loop_ms = _time_ms(run(looped), device, args.repeats, args.warmup)
    print(
        f"TCC loss forward+backward, B={args.batch_size} T={args.num_steps} D={args.dim} "
        f"{args.loss_type}/{args.similarity_type} on {device} "
        f"(torch threads: {torch.get_num_threads()}, median of {args.repeats})"
    )
    print(f"  per-pair loop : {loop_ms:8.3f} ms")
    print(f"  vectorised    : {vec_ms:8.3f} ms")
    print(f"  speed-up      : {loop_ms / vec_ms:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
