"""Train and evaluate TCC against its baselines with one encoder, budget and set of seeds.

::

    python benchmarks/baselines.py --dataset sim_pouring --steps 2000 --seeds 0 1 2 \\
        [--models light paper] [--algos tcc tcn ...] [--out runs/baselines] [--device cuda]

For every (model, method, seed) it runs ``python -m tcc_model.train`` into
``OUT/<model>/<method>/seed<k>`` and ``python -m tcc_model.evaluate`` into ``.../eval``. Methods:
TCC, TCN, SaL, TCC+TCN, TCC+SaL and the supervised baseline trained with the phase labels of the
first 10% or of all training videos (the 10% run trains on a dataset view holding only those
videos; every run is evaluated on the full dataset). Resumable: finished evaluations are skipped,
finished trainings are not repeated and interrupted ones continue with ``--resume``.

Writes ``OUT/baselines.md`` (mean ± std over seeds: classification 10/50/100%, few-shot with one
labelled video, progression R², Kendall's tau) and ``OUT/baselines.json`` (every run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# method name -> (training algo, fraction of training videos whose labels/frames it sees)
METHODS: dict[str, tuple[str, float]] = {
    "tcc": ("tcc", 1.0),
    "tcn": ("tcn", 1.0),
    "sal": ("sal", 1.0),
    "tcc+tcn": ("tcc+tcn", 1.0),
    "tcc+sal": ("tcc+sal", 1.0),
    "supervised-10": ("supervised", 0.1),
    "supervised-100": ("supervised", 1.0),
}

# model preset -> --set overrides (same encoder for every method of a preset)
MODELS: dict[str, list[str]] = {
    "light": ["model.encoder=light", "model.head=light"],
    "paper": [
        "model.encoder=resnet50_conv4c",
        "model.head=paper_conv3d",
        "model.image_size=224",
    ],
}

METRIC_COLUMNS = (
    ("classification_10", "cls 10%", True),
    ("classification_50", "cls 50%", True),
    ("classification_100", "cls 100%", True),
    ("few_shot_1", "few-shot 1 video", True),
    ("progression_r2", "progress R²", False),
    ("kendalls_tau", "Kendall τ", False),
)


@dataclass
class Run:
    """One (model, method, seed) training + evaluation."""

    model: str
    method: str
    seed: int
    out: Path

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out / "eval" / "metrics.json"


def _checkpoint_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    from tcc_model.checkpoint import load_checkpoint

    return int(load_checkpoint(path).get("step", 0))


def _subset_dataset(root: Path, fraction: float, out: Path) -> Path:
    """A dataset view (symlinks) whose train split holds the first ``int(f * N)`` videos.

    ``N`` counts the normal (anomaly-free) training videos, as the evaluation probes do; the
    training CLI needs at least 2 videos, so tiny datasets keep 2.
    """
    from tcc_model.data.format import load_split, read_manifest, write_manifest

    train = [e for e in load_split(root, "train") if e.labels.anomaly is None]
    keep = train[: max(min(2, len(train)), int(fraction * len(train)))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train").mkdir(exist_ok=True)
    for episode in keep:
        for src in (episode.label_path, episode.video_path):
            dst = out / "train" / src.name
            if not dst.exists():
                dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    for split in ("val", "test"):
        if (root / split).is_dir() and not (out / split).exists():
            (out / split).symlink_to((root / split).resolve(), target_is_directory=True)
    manifest = read_manifest(root) if (root / "manifest.json").is_file() else {"name": root.name}
    manifest["name"] = f"{manifest.get('name', root.name)}-first{len(keep)}of{len(train)}"
    manifest["subset_of"] = str(root)
    write_manifest(out, manifest)
    return out


def _run(cmd: list[str], log: Path, dry_run: bool) -> None:
    print("$ " + " ".join(cmd), flush=True)
    if dry_run:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}:\n" + "\n".join(tail))


def train_and_evaluate(run: Run, args: argparse.Namespace, dataset_root: Path) -> dict | None:
    """Train (or resume) and evaluate one run unless its metrics exist; returns the metrics."""
    if run.metrics_path.is_file():
        print(f"skip {run.out}: evaluated", flush=True)
        return json.loads(run.metrics_path.read_text())
    algo, fraction = METHODS[run.method]
    train_dataset = args.dataset
    if fraction < 1.0:
        subset = args.out / "datasets" / f"first{int(round(100 * fraction))}pct"
        if not args.dry_run:
            _subset_dataset(dataset_root, fraction, subset)
        train_dataset = f"folder:{subset}"
    config = args.config or _default_config(args.dataset)
    step = _checkpoint_step(run.checkpoint)
    started = time.time()
    if step is None or step < args.steps:
        cmd = [sys.executable, "-m", "tcc_model.train", "--dataset", train_dataset]
        cmd += ["--algo", algo, "--steps", str(args.steps), "--seed", str(run.seed)]
        cmd += ["--out", str(run.out), "--no-progress"]
        if config:
            cmd += ["--config", str(config)]
        if args.device:
            cmd += ["--device", args.device]
        if args.data_root:
            cmd += ["--data-root", args.data_root]
        if step is not None:
            cmd.append("--resume")
        cmd += ["--set", *MODELS[run.model], *args.set]
        _run(cmd, run.out / "train.log", args.dry_run)
    else:
        print(f"skip training {run.out}: step {step} >= {args.steps}", flush=True)
    train_seconds = time.time() - started
    cmd = [sys.executable, "-m", "tcc_model.evaluate", "--checkpoint", str(run.checkpoint)]
    cmd += ["--dataset", f"folder:{dataset_root}", "--out", str(run.metrics_path.parent)]
    cmd += ["--stride", str(args.stride), "--no-video", "--quiet", "--overwrite"]  # no metrics yet
    if args.device:
        cmd += ["--device", args.device]
    _run(cmd, run.out / "eval.log", args.dry_run)
    if args.dry_run:
        return None
    metrics = json.loads(run.metrics_path.read_text())
    metrics["config"]["train_seconds_this_invocation"] = round(train_seconds, 1)
    return metrics


def _default_config(dataset: str) -> Path | None:
    candidate = REPO / "config" / "train" / f"{dataset.split('/')[0].split(':')[0]}.yaml"
    return candidate if candidate.is_file() else None


def resolve_root(args: argparse.Namespace, model: str) -> Path:
    """Dataset root the training CLI would use (simulator rendered at the model's image size)."""
    from tcc_model.data.registry import resolve_dataset

    kwargs: dict[str, Any] = {"data_root": args.data_root}
    if args.dataset == "sim_pouring":
        sets = dict(s.split("=", 1) for s in (*MODELS[model], *args.set) if "=" in s)
        kwargs["sim_size"] = int(sets.get("data.sim_size", sets.get("model.image_size", 112)))
        if "data.sim_episodes" in sets:
            kwargs["sim_episodes"] = int(sets["data.sim_episodes"])
        if "data.sim_seed" in sets:
            kwargs["sim_seed"] = int(sets["data.sim_seed"])
        if "data.cache_dir" in sets:
            kwargs["cache_dir"] = sets["data.cache_dir"]
    return resolve_dataset(args.dataset, **kwargs)


def markdown_table(results: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> str:
    """Mean ± std over seeds of the headline metrics, one table per model."""
    lines = [
        f"# Baselines on `{args.dataset}` ({args.steps} steps, seeds {args.seeds})",
        "",
        "Same encoder, training budget and seeds per model. Classification / few-shot are val "
        "frame accuracies (%); supervised-10 saw the phase labels of the first 10% of training "
        "videos. Mean ± std over seeds; n = finished seeds.",
    ]
    for model, methods in results.items():
        lines += ["", f"## model `{model}`", ""]
        lines.append("| method | " + " | ".join(c[1] for c in METRIC_COLUMNS) + " | n |")
        lines.append("|---" * (len(METRIC_COLUMNS) + 2) + "|")
        for method, runs in methods.items():
            cells = []
            for key, _, pct in METRIC_COLUMNS:
                vals = np.array(
                    [r["headline"][key] for r in runs if r["headline"].get(key) is not None],
                    dtype=float,
                )
                if vals.size == 0:
                    cells.append("n/a")
                    continue
                scale = 100.0 if pct else 1.0
                digits = 2 if pct else 4
                mean, std = scale * vals.mean(), scale * vals.std()
                cells.append(
                    f"{mean:.{digits}f} ± {std:.{digits}f}"
                    if vals.size > 1
                    else f"{mean:.{digits}f}"
                )
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(runs)} |")
    return "\n".join(lines) + "\n"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sim_pouring")
    p.add_argument("--data-root", default=None)
    p.add_argument("--config", default=None, help="training YAML (default: per-dataset config)")
    p.add_argument("--steps", type=int, default=2000, help="training budget per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        default=["light"],
        help="model presets; 'paper' needs --set model.backbone_weights=PATH",
    )
    p.add_argument("--algos", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--stride", type=int, default=2, help="Kendall's tau stride")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "baselines")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra training overrides for every run",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, list[dict]]] = {}
    failures: list[str] = []
    try:
        for model in args.models:
            root = resolve_root(args, model)
            results[model] = {}
            for method in args.algos:
                results[model][method] = []
                for seed in args.seeds:
                    run = Run(model, method, seed, args.out / model / method / f"seed{seed}")
                    try:
                        metrics = train_and_evaluate(run, args, root)
                    except RuntimeError as exc:
                        failures.append(f"{run.out}: {exc}")
                        print(f"FAILED {run.out}: {exc}", file=sys.stderr, flush=True)
                        continue
                    if metrics is not None:
                        results[model][method].append(metrics)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    from tcc_model.utils import write_text_atomic

    table = markdown_table(results, args)
    write_text_atomic(args.out / "baselines.md", table)
    summary = {
        model: {
            method: [{"headline": r["headline"], "config": r["config"]} for r in runs]
            for method, runs in methods.items()
        }
        for model, methods in results.items()
    }
    write_text_atomic(args.out / "baselines.json", json.dumps(summary, indent=1) + "\n")
    print(table)
    if failures:
        print(f"{len(failures)} run(s) failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
