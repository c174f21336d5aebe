"""``python -m tcc_model.evaluate``: arguments, output folder, the whole evaluation, its report."""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.evaluate.protocols import DEFAULT_STRIDE, PROTOCOLS

REPORT_NAME = "metrics.json"


def _protocols(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated subset of {','.join(PROTOCOLS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (``--help`` does not import torch)."""
    from tcc_model.cli import add_checkpoint_arg, add_device_arg

    p = argparse.ArgumentParser(
        prog="python -m tcc_model.evaluate",
        description="Embed train/val with a checkpoint and run the TCC evaluation protocols.",
    )
    add_checkpoint_arg(p)
    p.add_argument(
        "--dataset", required=True, help="sim_pouring, pouring, penn_action/<action>, folder:PATH"
    )
    p.add_argument("--data-root", default=None, help="root of the real datasets")
    p.add_argument(
        "--eval-dataset",
        default=None,
        help="take the evaluation split from this dataset instead (e.g. folder:SHIFTED_SET); "
        "the training videos of the supervised protocols still come from --dataset",
    )
    p.add_argument(
        "--eval-split",
        default="val",
        help="split the protocols report on (default val; 'test' for a recipe tuned on val)",
    )
    p.add_argument(
        "--protocols",
        type=_protocols,
        default=PROTOCOLS,
        help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all; few_shot is the "
        "slowest)",
    )
    p.add_argument(
        "--out",
        default=None,
        type=Path,
        help="output folder (default: <run dir>/eval, or eval-2, eval-3... when it holds a report)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    _add_protocol_args(p)
    p.add_argument(
        "--max-videos",
        type=int,
        default=None,
        help="use only the first N videos of each split (quick checks)",
    )
    p.add_argument("--no-video", action="store_true", help="skip the synchronized MP4")
    p.add_argument("--tsne", action="store_true", help="also plot a t-SNE projection")
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    """Kendall's tau stride and distance, few-shot episodes (defaults of the reference)."""
    from tcc_model import evaluation as ev

    p.add_argument(
        "--stride",
        type=int,
        default=DEFAULT_STRIDE,
        help="Kendall's tau frame stride (2 for Pouring, 5 for Penn Action)",
    )
    p.add_argument(
        "--distance",
        choices=ev.DISTANCES,
        default="sqeuclidean",
        help="embedding distance of Kendall's tau",
    )
    p.add_argument(
        "--few-shot-episodes",
        type=int,
        default=ev.FEW_SHOT_EPISODES,
        help=f"few-shot episodes per number of labelled videos (default {ev.FEW_SHOT_EPISODES})",
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def output_dir(run_dir: Path, out: Path | None, overwrite: bool) -> Path:
    """Where the report goes; never a folder holding a report unless ``overwrite``.

    Without ``out``: ``run_dir/eval``, or the first of ``eval-2``, ``eval-3``... without a report.
    """
    from tcc_model.errors import ConfigError

    if out is not None:
        if (out / REPORT_NAME).exists() and not overwrite:
            raise ConfigError(
                f"--out {out} already holds a report ({REPORT_NAME}); pass --overwrite to "
                "replace it or choose another --out"
            )
        return out
    candidate, index = run_dir / "eval", 1
    while (candidate / REPORT_NAME).exists() and not overwrite:
        index += 1
        candidate = run_dir / f"eval-{index}"
    return candidate


def _check_args(args: argparse.Namespace) -> None:
    from tcc_model.errors import ConfigError

    if args.stride < 1:
        raise ConfigError(f"--stride must be >= 1, got {args.stride}")
    if args.few_shot_episodes < 1:
        raise ConfigError(f"--few-shot-episodes must be >= 1, got {args.few_shot_episodes}")
    if args.max_videos is not None and args.max_videos < 1:
        raise ConfigError(f"--max-videos must be >= 1, got {args.max_videos}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import numpy as np
    import scipy
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "torch": torch.__version__,
    }


def _embed_splits(
    model: Any, args: argparse.Namespace, data_kwargs: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """Embedded train videos (only when a supervised protocol runs) and evaluation videos."""
    from tcc_model.cli import stage
    from tcc_model.evaluate.embedding import embed_split

    progress = not args.quiet
    eval_dataset = args.eval_dataset or args.dataset
    train = []
    if set(args.protocols) - {"tau"}:
        with stage(f"embed {args.dataset} train"):
            train = embed_split(
                model, args.dataset, "train", args.data_root, args.max_videos, progress, data_kwargs
            )
    with stage(f"embed {eval_dataset} {args.eval_split}"):
        val = embed_split(
            model,
            eval_dataset,
            args.eval_split,
            args.data_root,
            args.max_videos,
            progress,
            data_kwargs,
        )
    return train, val


def _run_config(
    args: argparse.Namespace, ckpt_path: Path, ckpt: dict[str, Any], cfg: Any
) -> dict[str, Any]:
    """The exact configuration recorded in ``metrics.json`` (reports and timing added later)."""
    return {
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": _sha256(ckpt_path),
        "checkpoint_step": ckpt.get("step"),
        "train_config": ckpt.get("config"),
        "dataset": args.dataset,
        "eval_dataset": args.eval_dataset or args.dataset,
        "data_root": args.data_root,
        "splits": {"train": "train", "val": args.eval_split},
        "protocols": list(cfg.protocols),
        "max_videos": args.max_videos,
        "stride": cfg.stride,
        "distance": cfg.distance,
        "classification_fractions": list(cfg.fractions),
        "classifier": "sklearn.svm.SVC(decision_function_shape='ovo'), defaults",
        "few_shot_num_labeled": list(cfg.few_shot_num_labeled),
        "few_shot_episodes": cfg.few_shot_episodes,
        "few_shot_seed": cfg.few_shot_seed,
        "versions": _versions(),
    }


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole evaluation for parsed CLI ``args``; returns the metrics.json content.

    The output folder is ``args.out_dir`` when set (see :func:`output_dir`), else chosen here.
    """
    from tcc_model.checkpoint import load_model
    from tcc_model.cli import check_checkpoint, check_device, stage
    from tcc_model.evaluate.embedding import dataset_kwargs_from_checkpoint
    from tcc_model.evaluate.protocols import ProtocolConfig, run_protocols
    from tcc_model.evaluate.reports import (
        headline,
        save_embeddings,
        summary_markdown,
        write_visual_reports,
    )
    from tcc_model.reporting import jsonable, strict_json
    from tcc_model.utils import pick_device, write_text_atomic

    ckpt_path = check_checkpoint(args.checkpoint)
    _check_args(args)
    run_dir = (
        ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    )
    out_dir = getattr(args, "out_dir", None) or output_dir(run_dir, args.out, args.overwrite)
    args.out_dir = out_dir
    device = pick_device(check_device(args.device))
    started = time.time()
    model, ckpt = load_model(ckpt_path, device=device)
    data_kwargs = dataset_kwargs_from_checkpoint(ckpt)
    train, val = _embed_splits(model, args, data_kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_embeddings(out_dir / "embeddings.npz", {"train": train, args.eval_split: val})
    cfg = ProtocolConfig(
        stride=args.stride,
        distance=args.distance,
        few_shot_episodes=args.few_shot_episodes,
        protocols=tuple(args.protocols),
    )
    with stage("protocols " + ",".join(cfg.protocols)):
        metrics = run_protocols(train, val, cfg, not args.quiet)
    reports = write_visual_reports(train, val, out_dir, video=not args.no_video, tsne=args.tsne)
    config = _run_config(args, ckpt_path, ckpt, cfg)
    config.update(dataset_options=data_kwargs, device=str(device), reports=reports)
    config["seconds"] = round(time.time() - started, 1)
    result = jsonable({"headline": headline(metrics), "metrics": metrics, "config": config})
    write_text_atomic(out_dir / REPORT_NAME, strict_json(result, indent=1))
    write_text_atomic(out_dir / "summary.md", summary_markdown(metrics, config))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the headline numbers and the ``wrote:`` line; errors follow tcc_model.cli."""
    from tcc_model.cli import print_written
    from tcc_model.reporting import strict_json

    args = _parse_args(argv)
    result = evaluate_checkpoint(args)
    print(strict_json(result["headline"], indent=1), end="")
    written = {"report": args.out_dir / REPORT_NAME, "summary": args.out_dir / "summary.md"}
    written.update({Path(r).stem: args.out_dir / r for r in result["config"]["reports"]})
    print_written(written)
    return 0


def cli() -> None:
    """Console-script entry (``tcc-evaluate``): :func:`main` under the one error convention."""
    from tcc_model.cli import entry_point

    entry_point(main)
