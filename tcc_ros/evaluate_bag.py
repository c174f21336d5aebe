"""Offline evaluation of recorded ROS 2 bags: Kendall's tau and the monitor's accuracy.

    python -m tcc_ros.evaluate_bag BAG [BAG ...] --bundle B [--image-topic /camera/image_raw]
        [--episodes per-bag|marker-topic|gap] [--out DIR]

Reads MCAP or sqlite3 bags with ``rosbags`` (no ROS installation needed), splits them into
episodes, embeds every frame with the bundle's engine and reports:

* Kendall's tau over all ordered episode pairs (``tcc_model.evaluation.kendalls_tau``, the
  function of the evaluation suite) and each episode's tau against the bundle's references;
* when ground truth is in the bag (``/tcc/ground_truth``, as the demo camera and
  ``record_sim_bag`` write it): phase accuracy, progress error and anomaly detection of the
  streaming monitor replayed over the episodes;
* when the bag also holds the monitor's own ``/tcc/*`` outputs, the same scores for those.

Writes ``bag_eval.json``, ``bag_eval.md`` and progress plots to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tcc_model.monitor_metrics import EpisodeScore, score_episode, summarize
from tcc_model.utils import write_text_atomic
from tcc_ros.bag_io import BagError, iter_episode_slices, read_bag


@dataclass
class BagEpisode:
    """One episode cut from a bag, with its embeddings and (optional) ground truth."""

    name: str
    stamps_ns: np.ndarray
    embeddings: np.ndarray
    ground_truth: list[Any] | None  # GroundTruth messages per frame, when every frame has one
    recorded: dict[str, list[Any | None]] = field(default_factory=dict)  # /tcc/* per frame


def load_episodes(
    bags: list[Path],
    engine: Any,
    image_topic: str,
    mode: str,
    gap_s: float,
) -> tuple[list[BagEpisode], dict[str, float]]:
    """Read, decode and embed every episode of ``bags``; returns episodes and timing counters."""
    episodes: list[BagEpisode] = []
    counters = {"frames": 0, "rejected_frames": 0, "read_s": 0.0, "embed_s": 0.0}
    for bag in tqdm(bags, desc="bags", unit="bag", disable=len(bags) < 2):
        t0 = time.perf_counter()
        contents = read_bag(bag, image_topic)
        counters["read_s"] += time.perf_counter() - t0
        counters["rejected_frames"] += contents.rejected_images
        for name, sl in tqdm(
            list(iter_episode_slices(contents, mode, gap_s)), desc=f"embed {bag.name}", unit="ep"
        ):
            images = contents.images[sl]
            frames = np.stack([im.frame for im in images])
            stamps = np.array([im.stamp_ns for im in images], dtype=np.int64)
            t0 = time.perf_counter()
            embeddings = np.asarray(engine.embed_frames(frames), dtype=np.float32)
            counters["embed_s"] += time.perf_counter() - t0
            counters["frames"] += len(images)
            truth = [contents.ground_truth.get(int(s)) for s in stamps]
            recorded = {
                topic: [msgs.get(int(s)) for s in stamps]
                for topic, msgs in contents.monitor_outputs.items()
            }
            episodes.append(
                BagEpisode(
                    name=name,
                    stamps_ns=stamps,
                    embeddings=embeddings,
                    ground_truth=truth if all(t is not None for t in truth) else None,
                    recorded=recorded,
                )
            )
    return episodes, counters


def _ground_truth_arrays(truth: list[Any]) -> dict[str, np.ndarray]:
    return {
        "progress": np.array([t.progress for t in truth], dtype=np.float64),
        "phase": np.array([t.phase_id for t in truth], dtype=np.int64),
        "anomaly": np.array([t.anomaly for t in truth], dtype=bool),
        "anomalous": np.array([bool(t.anomaly_kind) for t in truth], dtype=bool),
    }


def replay_monitor(episode: BagEpisode, references: Any, config: Any) -> dict[str, np.ndarray]:
    """Run the streaming monitor over an episode's embeddings, frame by frame (causal)."""
    from tcc_model.stream import ProgressMonitor

    monitor = ProgressMonitor(references, config=config)
    results = [monitor.process_embedding(e) for e in episode.embeddings]
    return {
        "progress": np.array([r.progress if r.valid else np.nan for r in results]),
        "phase": np.array([r.phase_id for r in results], dtype=np.int64),
        "alarm": np.array([r.anomaly for r in results], dtype=bool),
        "score": np.array([r.anomaly_score for r in results], dtype=np.float64),
    }


def recorded_outputs(episode: BagEpisode) -> dict[str, np.ndarray] | None:
    """The monitor's own recorded outputs per frame, or None when the bag has none."""
    progress = episode.recorded.get("/tcc/progress")
    phase = episode.recorded.get("/tcc/phase")
    anomaly = episode.recorded.get("/tcc/anomaly")
    if not progress or not phase or all(p is None for p in progress):
        return None
    return {
        "progress": np.array([p.progress if p is not None else np.nan for p in progress]),
        "phase": np.array([p.phase_id if p is not None else -2 for p in phase], dtype=np.int64),
        "alarm": np.array(
            [
                bool(a.anomaly) if a is not None else False
                for a in (anomaly or [None] * len(progress))
            ]
        ),
        "score": np.array(
            [a.score if a is not None else np.nan for a in (anomaly or [None] * len(progress))]
        ),
    }


def _score(episode: BagEpisode, pred: dict[str, np.ndarray]) -> EpisodeScore:
    gt = _ground_truth_arrays(episode.ground_truth or [])
    return score_episode(
        episode.name,
        pred_progress=pred["progress"],
        pred_phase=pred["phase"],
        pred_alarm=pred["alarm"],
        pred_score=pred["score"],
        gt_progress=gt["progress"],
        gt_phase=gt["phase"],
        gt_anomaly_mask=gt["anomaly"],
        anomalous=bool(gt["anomalous"].any()),
    )


def evaluate(args: argparse.Namespace) -> dict:
    """Run the whole evaluation and write the reports; returns the JSON report."""
    from tcc_model.engine import load_bundle
    from tcc_model.evaluation import kendalls_tau, kendalls_tau_matrix
    from tcc_model.stream import MonitorConfig, ReferenceSet

    bags = [Path(b) for b in args.bags]
    engine = load_bundle(args.bundle, backend=args.backend, threads=args.threads)
    references = ReferenceSet.load(args.bundle, bundle_id=engine.bundle_id)
    config = MonitorConfig()
    t_start = time.perf_counter()
    episodes, counters = load_episodes(bags, engine, args.image_topic, args.episodes, args.gap)
    wall = time.perf_counter() - t_start
    embs = [e.embeddings for e in episodes]

    report: dict[str, Any] = {
        "bags": [str(b) for b in bags],
        "bundle": str(args.bundle),
        "backend": engine.backend,
        "config": {
            "image_topic": args.image_topic,
            "episodes": args.episodes,
            "gap_s": args.gap,
            "tau_stride": args.stride,
            "tau_distance": args.distance,
        },
        "episodes": [{"name": e.name, "frames": len(e.stamps_ns)} for e in episodes],
        "throughput": {
            **counters,
            "wall_s": wall,
            "frames_per_s": counters["frames"] / wall if wall > 0 else float("nan"),
        },
    }
    if len(embs) >= 2:
        report["kendalls_tau"] = kendalls_tau(embs, stride=args.stride, distance=args.distance)
    else:
        report["kendalls_tau"] = None
        report["kendalls_tau_skipped"] = "needs at least 2 episodes"
    ref_embs = [np.asarray(r, dtype=np.float32) for r in references.embeddings]
    per_episode_tau = []
    for e in episodes:
        matrix = kendalls_tau_matrix(
            [e.embeddings, *ref_embs], stride=args.stride, distance=args.distance
        )
        vs_refs = [v for v in (matrix[0, 1:].tolist() + matrix[1:, 0].tolist()) if math.isfinite(v)]
        per_episode_tau.append(float(np.mean(vs_refs)) if vs_refs else float("nan"))
    for entry, tau in zip(report["episodes"], per_episode_tau):
        entry["tau_vs_reference"] = tau

    with_truth = [e for e in episodes if e.ground_truth is not None]
    if with_truth:
        replay_scores = []
        recorded_scores = []
        curves = []
        for e in tqdm(with_truth, desc="replay monitor", unit="ep"):
            pred = replay_monitor(e, references, config)
            replay_scores.append(_score(e, pred))
            rec = recorded_outputs(e)
            if rec is not None:
                recorded_scores.append(_score(e, rec))
            curves.append(
                (e.name, _ground_truth_arrays(e.ground_truth)["progress"], pred["progress"])
            )
        report["replayed_monitor"] = {
            "summary": summarize(replay_scores),
            "episodes": [s.to_dict() for s in replay_scores],
        }
        if recorded_scores:
            report["recorded_monitor"] = {
                "summary": summarize(recorded_scores),
                "episodes": [s.to_dict() for s in recorded_scores],
            }
        report["plots"] = _plot_progress(curves, Path(args.out))
    else:
        report["monitor_skipped"] = "no /tcc/ground_truth in the bags: accuracy needs ground truth"
    return report


def _plot_progress(curves: list[tuple[str, np.ndarray, np.ndarray]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    n = len(curves)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, gt, pred) in zip(axes.flat, curves):
        ax.plot(gt, label="ground truth", color="black", lw=1)
        ax.plot(pred, label="monitor", color="tab:blue", lw=1)
        ax.set_title(name, fontsize=8)
        ax.set_ylim(-0.05, 1.05)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "progress_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def to_strict_json(report: dict) -> str:
    """JSON text with NaN/inf written as ``null`` (strict parsers reject bare NaN)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(report), indent=2, allow_nan=False)


def markdown(report: dict) -> str:
    """Human-readable summary of a report."""
    lines = ["# Bag evaluation", ""]
    lines.append(f"Bags: {', '.join(report['bags'])}  ")
    lines.append(f"Bundle: {report['bundle']} (backend {report['backend']})  ")
    t = report["throughput"]
    lines.append(
        f"Frames: {t['frames']} ({t['rejected_frames']} rejected), "
        f"{_fmt(t['frames_per_s'])} frames/s end to end (read + decode + embed)"
    )
    lines += ["", f"Kendall's tau over ordered episode pairs: {_fmt(report['kendalls_tau'])}", ""]
    lines += ["| episode | frames | tau vs reference |", "|---|---|---|"]
    lines += [
        f"| {e['name']} | {e['frames']} | {_fmt(e['tau_vs_reference'])} |"
        for e in report["episodes"]
    ]
    for key, title in (
        ("replayed_monitor", "Monitor replayed offline"),
        ("recorded_monitor", "Monitor outputs recorded in the bag"),
    ):
        if key in report:
            s = report[key]["summary"]
            lines += ["", f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in s.items()]
    if "monitor_skipped" in report:
        lines += ["", f"Monitor accuracy skipped: {report['monitor_skipped']}"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name if __spec__ else __name__}",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("bags", nargs="+", help="bag directories (MCAP or sqlite3)")
    p.add_argument("--bundle", required=True, help="model bundle with references")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--episodes", choices=["per-bag", "marker-topic", "gap"], default="per-bag")
    p.add_argument(
        "--gap", type=float, default=1.0, help="seconds between episodes for --episodes gap"
    )
    p.add_argument("--stride", type=int, default=2, help="Kendall's tau frame stride")
    p.add_argument("--distance", choices=["sqeuclidean", "cosine"], default="sqeuclidean")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bag_eval")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    if not args.gap > 0:
        parser.error(f"--gap must be > 0 seconds, got {args.gap}")
    try:
        report = evaluate(args)
    except (BagError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bag_eval.json", to_strict_json(report))
    write_text_atomic(out / "bag_eval.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
