"""Evaluate a checkpoint with the TCC paper's protocols and write metrics and visual reports.

::

    python -m tcc_model.evaluate --checkpoint CKPT --dataset NAME [--data-root DIR] [--out DIR]
        [--eval-dataset NAME] [--eval-split val] [--protocols tau,classification,...]
        [--overwrite] [--stride 2] [--device cuda|cpu]

Every frame of the train split of ``--dataset`` and of the ``--eval-split`` of
``--eval-dataset`` (default: ``--dataset``, e.g. a shifted set from another generator run) is
embedded (eval mode, causal context frames). On the **normal** episodes only (``anomaly`` is
None) it runs Kendall's tau, phase classification (10/50/100% of training videos), few-shot
classification (1..10 labelled videos) and phase progression, exactly as
:mod:`tcc_model.evaluation` documents, or the subset ``--protocols`` names (tau alone needs no
training videos). Datasets without phase labels get Kendall's tau and the unsupervised plots only.
Writes ``OUT/metrics.json`` (every number and the exact configuration), ``OUT/summary.md``,
``OUT/embeddings.npz`` and the plots / synchronized video. ``OUT`` defaults to the run's
``eval/`` or, when that holds a report, the first free ``eval-2/``, ``eval-3/``...; an explicit
``--out`` holding a report is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model import evaluation as ev
from tcc_model.evaluate_reports import (  # re-exported: the public report functions
    headline,
    save_embeddings,
    summary_markdown,
    write_visual_reports,
)

DEFAULT_STRIDE = 2
#: protocols --protocols can choose from (default: all)
PROTOCOLS: tuple[str, ...] = ("tau", "classification", "few_shot", "progression")


@dataclass
class EmbeddedVideo:
    """Per-frame embeddings of one episode plus the labels the protocols need."""

    name: str
    embs: np.ndarray
    phase_ids: np.ndarray | None
    phase_names: list[str] = field(default_factory=list)
    key_events: dict[str, int] = field(default_factory=dict)
    anomaly: str | None = None
    anomaly_mask: np.ndarray | None = None
    fps: float = 30.0
    episode: Any = None  # tcc_model.data.format.Episode, to reload frames for videos

    @property
    def is_normal(self) -> bool:
        return self.anomaly is None


def embed_split(
    model,
    dataset: str,
    split: str,
    data_root: str | Path | None = None,
    max_videos: int | None = None,
    progress: bool = True,
    dataset_kwargs: dict[str, Any] | None = None,
) -> list[EmbeddedVideo]:
    """Load ``split`` of ``dataset`` (registry name) and embed every frame of every episode.

    ``dataset_kwargs`` go to :func:`tcc_model.data.registry.resolve_dataset` (simulator size,
    episodes, seed, cache folder); see :func:`dataset_kwargs_from_checkpoint`.
    """
    from tcc_model.data.registry import load_dataset_split
    from tcc_model.embed import embed_episodes

    episodes = load_dataset_split(
        dataset, split, data_root=data_root, progress=progress, **(dataset_kwargs or {})
    )
    if max_videos is not None:
        episodes = episodes[:max_videos]
    all_embs = embed_episodes(model, episodes, progress=progress)
    return [_embedded(ep, embs) for ep, embs in zip(episodes, all_embs)]


def dataset_kwargs_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Simulator dataset options the checkpoint was trained with, so evaluation sees the same data.

    As in training, the simulator renders at the model's image size unless ``data.sim_size`` is set.
    """
    config = ckpt.get("config") or {}
    data = config.get("data") or {}
    kwargs: dict[str, Any] = {}
    if data.get("cache_dir") is not None:
        kwargs["cache_dir"] = data["cache_dir"]
    if data.get("sim_episodes") is not None:
        kwargs["sim_episodes"] = int(data["sim_episodes"])
    size = data.get("sim_size") or (config.get("model") or {}).get("image_size")
    if size is not None:
        kwargs["sim_size"] = int(size)
    if data.get("sim_seed") is not None:
        kwargs["sim_seed"] = int(data["sim_seed"])
    return kwargs


def _embedded(episode, embs: np.ndarray) -> EmbeddedVideo:
    labels = episode.labels
    return EmbeddedVideo(
        name=episode.name,
        embs=np.asarray(embs),
        phase_ids=None if labels.phase_ids is None else np.asarray(labels.phase_ids, np.int64),
        phase_names=list(labels.phase_names),
        key_events=dict(labels.key_events),
        anomaly=labels.anomaly,
        anomaly_mask=None if labels.anomaly_mask is None else np.asarray(labels.anomaly_mask),
        fps=float(labels.fps),
        episode=episode,
    )


# --------------------------------------------------------------------------------------------
# Protocols


@dataclass
class ProtocolConfig:
    """Protocol settings (defaults = the reference's, tau stride 2 as for Pouring)."""

    stride: int = DEFAULT_STRIDE
    distance: str = "sqeuclidean"
    fractions: tuple[float, ...] = ev.CLASSIFICATION_FRACTIONS
    few_shot_num_labeled: tuple[int, ...] = ev.FEW_SHOT_NUM_LABELED
    few_shot_episodes: int = ev.FEW_SHOT_EPISODES
    few_shot_seed: int = ev.FEW_SHOT_SEED
    protocols: tuple[str, ...] = PROTOCOLS


def run_protocols(
    train: Sequence[EmbeddedVideo],
    val: Sequence[EmbeddedVideo],
    cfg: ProtocolConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The protocols of ``cfg.protocols`` on the normal episodes; returns a JSON-ready dict with
    notes on skips (a protocol not asked for is ``None`` with a note)."""
    from tqdm.auto import tqdm

    cfg = cfg or ProtocolConfig()
    chosen = set(cfg.protocols)
    notes: list[str] = []
    train_n = [v for v in train if v.is_normal]
    val_n = [v for v in val if v.is_normal]
    excluded = (len(train) - len(train_n), len(val) - len(val_n))
    if any(excluded):
        notes.append(
            f"protocols use normal episodes only: excluded {excluded[0]} train and "
            f"{excluded[1]} val episodes with an anomaly"
        )
    out: dict[str, Any] = {
        "num_videos": {"train": len(train_n), "val": len(val_n)},
        "num_frames": {
            "train": int(sum(len(v.embs) for v in train_n)),
            "val": int(sum(len(v.embs) for v in val_n)),
        },
        "excluded_anomalous": {"train": excluded[0], "val": excluded[1]},
    }
    steps = tqdm(total=4, desc="protocols", disable=not progress)
    tau: dict[str, Any] = {}
    for split, videos in (("val", val_n), ("train", train_n)):
        if "tau" not in chosen:
            tau[split] = None
            continue
        if len(videos) < 2:
            tau[split] = None
            notes.append(f"kendalls_tau on {split}: skipped, needs >= 2 normal videos")
            continue
        matrix = ev.kendalls_tau_matrix([v.embs for v in videos], cfg.stride, cfg.distance)
        off = matrix[~np.eye(len(videos), dtype=bool)]
        valid = off[~np.isnan(off)]
        tau[split] = {
            "value": float(valid.mean()) if valid.size else None,
            "num_pairs": int(off.size),
            "num_nan_pairs": int(off.size - valid.size),
        }
    out["kendalls_tau"] = tau
    steps.update()

    if not chosen - {"tau"}:
        out.update(phase_classification=None, few_shot=None, phase_progression=None)
        steps.update(3)
        steps.close()
        out["notes"] = notes + ["not run (--protocols): classification, few_shot, progression"]
        return out
    labelled_train = [v for v in train_n if v.phase_ids is not None]
    labelled_val = [v for v in val_n if v.phase_ids is not None]
    if not labelled_train or not labelled_val:
        reason = (
            "no per-frame phase labels (labels.phase_ids is None) in the "
            f"{'train' if not labelled_train else 'val'} split: phase classification, few-shot "
            "and progression need them; only Kendall's tau and unsupervised plots are reported"
        )
        notes.append(reason)
        out.update(phase_classification=None, few_shot=None, phase_progression=None)
        out["supervised_skipped"] = reason
        steps.update(3)
        steps.close()
        out["notes"] = notes
        return out
    if len(labelled_train) < len(train_n) or len(labelled_val) < len(val_n):
        notes.append(
            "supervised protocols use the labelled episodes only "
            f"({len(labelled_train)}/{len(train_n)} train, {len(labelled_val)}/{len(val_n)} val)"
        )
    args = (
        [v.embs for v in labelled_train],
        [v.phase_ids for v in labelled_train],
        [v.embs for v in labelled_val],
        [v.phase_ids for v in labelled_val],
    )
    out.update(phase_classification=None, few_shot=None, phase_progression=None)
    if "classification" in chosen:
        cls = ev.phase_classification(*args, fractions=cfg.fractions)
        out["phase_classification"] = {str(f): r.to_dict() for f, r in cls.items()}
    steps.update()
    if "few_shot" in chosen:
        few = ev.few_shot_classification(
            *args, cfg.few_shot_num_labeled, cfg.few_shot_episodes, cfg.few_shot_seed
        )
        out["few_shot"] = {str(k): r.to_dict() for k, r in few.items()}
    steps.update()
    if "progression" in chosen:
        num_phases = len(labelled_train[0].phase_names) or None
        prog = ev.phase_progression(*args, num_phases=num_phases, fractions=cfg.fractions)
        out["phase_progression"] = {str(f): r.to_dict() for f, r in prog.items()}
        for f, r in prog.items():
            if r.skipped_train or r.skipped_val:
                notes.append(
                    f"phase_progression (fraction {f}): (video, event) pairs with the phase "
                    f"missing were left out of that event: train {r.skipped_train}, "
                    f"val {r.skipped_val}"
                )
    steps.update()
    steps.close()
    skipped = [p for p in PROTOCOLS if p not in chosen]
    if skipped:
        notes.append(f"not run (--protocols): {', '.join(skipped)}")
    out["notes"] = notes
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# CLI


def _protocols(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated subset of {','.join(PROTOCOLS)}"
        )
    return names


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
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
    p.add_argument(
        "--stride",
        type=int,
        default=DEFAULT_STRIDE,
        help="Kendall's tau frame stride (2 for Pouring, 5 for Penn Action)",
    )
    p.add_argument("--distance", choices=ev.DISTANCES, default="sqeuclidean")
    p.add_argument("--few-shot-episodes", type=int, default=ev.FEW_SHOT_EPISODES)
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
    return p.parse_args(argv)


REPORT_NAME = "metrics.json"


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


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole evaluation for parsed CLI ``args``; returns the metrics.json content.

    The output folder is ``args.out_dir`` when set (see :func:`output_dir`), else chosen here.
    """
    from tcc_model.checkpoint import load_model
    from tcc_model.cli import check_checkpoint, check_device, stage
    from tcc_model.utils import pick_device, write_text_atomic

    ckpt_path = check_checkpoint(args.checkpoint)
    _check_args(args)
    run_dir = (
        ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    )
    out_dir = getattr(args, "out_dir", None) or output_dir(run_dir, args.out, args.overwrite)
    args.out_dir = out_dir
    progress = not args.quiet
    device = pick_device(check_device(args.device))
    started = time.time()
    model, ckpt = load_model(ckpt_path, device=device)
    data_kwargs = dataset_kwargs_from_checkpoint(ckpt)
    eval_dataset = args.eval_dataset or args.dataset
    protocols = tuple(args.protocols)
    train: list[EmbeddedVideo] = []
    if set(protocols) - {"tau"}:
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
    out_dir.mkdir(parents=True, exist_ok=True)
    save_embeddings(out_dir / "embeddings.npz", {"train": train, args.eval_split: val})
    cfg = ProtocolConfig(
        stride=args.stride,
        distance=args.distance,
        few_shot_episodes=args.few_shot_episodes,
        protocols=protocols,
    )
    with stage("protocols " + ",".join(protocols)):
        metrics = run_protocols(train, val, cfg, progress)
    reports = write_visual_reports(train, val, out_dir, video=not args.no_video, tsne=args.tsne)
    config = {
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": _sha256(ckpt_path),
        "checkpoint_step": ckpt.get("step"),
        "train_config": ckpt.get("config"),
        "dataset": args.dataset,
        "eval_dataset": eval_dataset,
        "data_root": args.data_root,
        "dataset_options": data_kwargs,
        "splits": {"train": "train", "val": args.eval_split},
        "protocols": list(protocols),
        "max_videos": args.max_videos,
        "stride": cfg.stride,
        "distance": cfg.distance,
        "classification_fractions": list(cfg.fractions),
        "classifier": "sklearn.svm.SVC(decision_function_shape='ovo'), defaults",
        "few_shot_num_labeled": list(cfg.few_shot_num_labeled),
        "few_shot_episodes": cfg.few_shot_episodes,
        "few_shot_seed": cfg.few_shot_seed,
        "device": str(device),
        "versions": _versions(),
        "reports": reports,
        "seconds": round(time.time() - started, 1),
    }
    result = _jsonable({"headline": headline(metrics), "metrics": metrics, "config": config})
    write_text_atomic(out_dir / REPORT_NAME, json.dumps(result, indent=1) + "\n")
    write_text_atomic(out_dir / "summary.md", summary_markdown(metrics, config))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the headline numbers and the ``wrote:`` line; errors follow tcc_model.cli."""
    from tcc_model.cli import print_written

    args = _parse_args(argv)
    result = evaluate_checkpoint(args)
    print(json.dumps(result["headline"], indent=1))
    print_written({"report": args.out_dir / REPORT_NAME, "summary": args.out_dir / "summary.md"})
    return 0


def cli() -> None:
    """Console-script entry (``tcc-evaluate``): :func:`main` under the one error convention."""
    from tcc_model.cli import entry_point

    entry_point(main)


if __name__ == "__main__":
    cli()
