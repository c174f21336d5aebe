"""Training CLI: ``python -m tcc_model.train --dataset sim_pouring [options]``.

Configuration is layered (see :mod:`tcc_model.train.config`): defaults <
``config/train/<dataset>.yaml`` (or ``--config FILE``) < command-line flags <
``--set section.key=value``, every value type-checked before any data loads. Writes
``OUT/config.yaml``, ``OUT/checkpoints/last.pt`` (+ ``step_XXXXXX.pt`` every
``train.checkpoint_interval`` steps) and TensorBoard logs in ``OUT/tb``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m tcc_model.train ...`` (DDP; NCCL on CUDA,
gloo on CPU). ``train.batch_size`` is per process, as the reference's per-replica batch.

Nothing heavy is imported at module level: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.cli import add_device_arg, check_device, print_written, run_main
from tcc_model.errors import CheckpointError

ALGO_CHOICES = ("tcc", "tcn", "sal", "tcc+tcn", "tcc+sal", "tcc+sal+tcn", "supervised")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.train",
        description="Train a TCC (or baseline) frame embedder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="sim_pouring",
        help="sim_pouring | pouring | penn_action[/ACTION] | folder:PATH",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config: a path or a name in config/train (default: config/train/<dataset>.yaml)",
    )
    p.add_argument("--algo", default=None, choices=ALGO_CHOICES)
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=None, help="videos per batch (per process)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<algo>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=None)
    add_device_arg(p)
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast of the embedder on CPU and CUDA (loss, weights and optimizer "
        "stay float32; fp16 + loss scaling on GPUs without bf16)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the embedder (about 10 s of compilation on a CPU)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--backbone-weights",
        default=None,
        help="local torchvision resnet50 ImageNet state dict (resnet50_conv4c encoder)",
    )
    p.add_argument("--data-root", default=None, help="root of the real datasets")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set train.lr=3e-4 model.encoder=vggm",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def cli_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Config updates from the explicit command-line flags."""
    train = {
        key: getattr(args, key)
        for key in ("steps", "batch_size", "seed", "device", "lr", "amp", "compile", "threads")
        if getattr(args, key) is not None
    }
    if args.no_progress:
        train["progress"] = False
    out: dict[str, Any] = {"train": train} if train else {}
    if args.algo is not None:
        out["algo"] = {"name": args.algo}
    if args.backbone_weights is not None:
        out["model"] = {"backbone_weights": args.backbone_weights}
    if args.data_root is not None:
        out["data"] = {"data_root": args.data_root}
    return out


def resolve_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The checked :class:`~tcc_model.train.config.TrainingConfig` of a command line."""
    from tcc_model.train.config import layer_config

    config = layer_config(args.dataset, args.config, cli_flags(args), args.set or [], base)
    check_device(config.train.device)
    return config


def _distributed_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _config_diff(a: dict, b: dict) -> list[str]:
    return [
        f"{k}: {a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _check_resume(stored: dict[str, Any], config: dict[str, Any], last: Path, rank: int) -> None:
    """Refuse another architecture; warn about changed settings that alter the trajectory."""
    from tcc_model.train.config import RUNTIME_KEYS

    model_diff = _config_diff(
        {**stored["model"], "backbone_weights": None}, {**config["model"], "backbone_weights": None}
    )
    if model_diff:
        raise CheckpointError(
            f"checkpoint {last} is from another architecture ({'; '.join(model_diff)}); "
            "resume with the same model config or use a new --out"
        )
    for section, allowed in RUNTIME_KEYS.items():
        changed = [
            k
            for k in _config_diff(stored.get(section, {}), config[section])
            if k.split(":")[0] not in allowed
        ]
        if changed and rank == 0:
            print(f"warning: resuming with changed {section} settings: {changed}", file=sys.stderr)


def out_dir_of(args: argparse.Namespace) -> Path:
    """``--out``, or ``runs/<dataset>-<algo>``."""
    name = f"{args.dataset.replace(':', '_').replace('/', '_')}-{args.algo or 'train'}"
    return Path(args.out or f"runs/{name}")


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train as the command line says; returns the final metrics."""
    from tcc_model.checkpoint import load_checkpoint
    from tcc_model.train.config import TrainingConfig

    out_dir = out_dir_of(args)
    last = out_dir / "checkpoints" / "last.pt"
    stored = None
    if args.resume and last.is_file():
        stored = TrainingConfig.from_dict(load_checkpoint(last)["config"], str(last)).to_dict()
    elif last.is_file():
        raise CheckpointError(
            f"{out_dir} already holds a run ({last}); pass --resume to continue it or choose "
            "another --out"
        )
    config = resolve_config(args, base=stored)
    if stored is not None:
        _check_resume(stored, config.to_dict(), last, _distributed_env()[0])
        config.model.backbone_weights = None  # the checkpoint holds the weights
    argv = getattr(args, "argv", None)
    return _train(config, out_dir, last if stored is not None else None, args.resume, argv)


def _train(
    config: Any,
    out_dir: Path,
    resume_from: Path | None,
    resume: bool,
    argv: Sequence[str] | None = None,
) -> dict[str, float]:
    import torch
    import yaml

    from tcc_model.train.trainer import Trainer
    from tcc_model.utils import pick_device, write_text_atomic

    rank, world_size, local_rank = _distributed_env()
    device = pick_device(config.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # clip shapes are fixed: pick the fastest kernels
    # a torchrun launch is distributed even with one process (same code path as on N GPUs)
    distributed = world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if distributed:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trainer = Trainer(
            config, out_dir, rank, world_size, device, resuming=resume_from is not None
        )
        if resume_from is not None:
            trainer.restore(resume_from)
            trainer._log(f"resumed from {resume_from} at step {trainer.step}")
        elif resume:
            trainer._log(f"no checkpoint in {out_dir}; starting from step 0")
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(trainer.config, sort_keys=False)
            write_text_atomic(out_dir / "config.yaml", text)
            if argv is not None:
                from tcc_model.train.provenance import record_launch

                record_launch(out_dir, argv, torch.get_num_threads())
        return trainer.train()
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def cli_main(argv: Sequence[str] | None = None) -> int:
    """The command; user errors raise (see :func:`tcc_model.cli.run_main`)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    metrics = run(args)
    if _distributed_env()[0] != 0:
        return 0
    if metrics:
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    out = out_dir_of(args)
    written = {
        "config": out / "config.yaml",
        "provenance": out / "provenance.json",
        "checkpoints": out / "checkpoints",
        "tensorboard": out / "tb",
    }
    if (out / "tb").is_dir():
        from tcc_model.visualize.metrics import curves_from_tensorboard, plot_loss_curve

        train_curves, val_curves = curves_from_tensorboard(out / "tb")
        if train_curves:
            written["loss curve"] = plot_loss_curve(
                train_curves, out / "loss_curve.png", val_curves, title=out.name
            )
    print_written(written)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command under the project's error convention; returns the exit status."""
    return run_main(cli_main, argv)
