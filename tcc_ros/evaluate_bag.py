"""Offline evaluation of recorded ROS 2 bags: Kendall's tau and the monitor's accuracy.

    python -m tcc_ros.evaluate_bag BAG [BAG ...] --bundle B [--image-topic /camera/image_raw]
        [--episodes auto|per-bag|marker-topic|gap] [--params PARAMS.yaml] [--set KEY=VALUE]
        [--out DIR]

Reads MCAP or sqlite3 bags with ``rosbags`` (no ROS installation needed), splits them into
episodes (``auto``: at the ``/tcc/episode`` markers ``record_sim_bag`` and the demo camera write,
one episode per bag without them), embeds every frame with the bundle's engine and reports:

* Kendall's tau over all ordered episode pairs (``tcc_model.evaluation.kendalls_tau``, the
  function of the evaluation suite) and each episode's tau against the bundle's references;
* when ground truth is in the bag (``/tcc/ground_truth``): phase accuracy, progress error and
  anomaly detection of the streaming monitor replayed over the episodes, with the settings the
  live node uses (``tcc_model.stream.monitor_config``: the bundle's calibration, then the
  ``monitor:`` section of the node's parameter file ``--params``, then ``--set``);
* when the bag also holds the monitor's own ``/tcc/*`` outputs, the same scores for those.

Writes ``bag_eval.json``, ``bag_eval.md``, an overview of every episode's progress
(``progress_curves.png``), one timeline per episode (``timelines/<episode>.png``: progress,
phase, anomaly score against its threshold, alarms) and the phase confusion matrix to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tcc_model.errors import ConfigError
from tcc_model.monitor_metrics import summarize
from tcc_ros.bag_episodes import (
    BagEpisode,
    episode_timeline,
    load_episodes,
    recorded_outputs,
    replay_monitor,
    score_against_truth,
)
from tcc_ros.bag_io import EPISODE_MODES

__all__ = ["build_parser", "evaluate", "load_episodes", "main", "monitor_settings"]

PARAMS_NAME = "progress_monitor.yaml"


def default_params() -> Path | None:
    """The node's parameter file: this source tree's ``config/``, else the installed share."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / PARAMS_NAME]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("tcc_ros")) / "config" / PARAMS_NAME)
    except Exception:  # noqa: BLE001 - ament index absent or the package not installed
        pass
    return next((c for c in candidates if c.is_file()), None)


# --------------------------------------------------------------------------------------------
# Monitor settings: the live node's


def parse_set(items: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict (values stay strings; the config converts them)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set window=48")
        out[key.strip()] = value.strip()
    return out


def params_overrides(path: str | Path) -> dict[str, Any]:
    """The ``monitor:`` section of the node's parameter file, checked against MonitorConfig."""
    from tcc_model.stream import MonitorConfig, config_with
    from tcc_ros.monitor import read_node_parameters

    try:
        params = read_node_parameters(path)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    monitor = params.get("monitor") or {}
    if not isinstance(monitor, dict):
        raise ConfigError(f"--params {path}: 'monitor' must map MonitorConfig fields to values")
    config_with(MonitorConfig(), monitor, f"--params {path}")  # names the file on bad values
    return dict(monitor)


def monitor_settings(args: argparse.Namespace) -> Any:
    """The MonitorConfig of the live node: calibration, then ``--params``, then ``--set``."""
    from tcc_model.stream import monitor_config

    overrides = params_overrides(args.params) if args.params else {}
    overrides.update(parse_set(args.set))
    return monitor_config(args.bundle, overrides)


# --------------------------------------------------------------------------------------------
# Evaluation


def _tau_section(report: dict, episodes: list[BagEpisode], references: Any, args: Any) -> None:
    """Kendall's tau over episode pairs and of each episode against the references."""
    from tcc_model.evaluation import kendalls_tau, kendalls_tau_matrix

    embs = [e.embeddings for e in episodes]
    if len(embs) >= 2:
        report["kendalls_tau"] = kendalls_tau(embs, stride=args.stride, distance=args.distance)
    else:
        report["kendalls_tau"] = None
        report["kendalls_tau_skipped"] = "needs at least 2 episodes"
    ref_embs = [np.asarray(r, dtype=np.float32) for r in references.embeddings]
    for entry, e in zip(report["episodes"], episodes):
        matrix = kendalls_tau_matrix(
            [e.embeddings, *ref_embs], stride=args.stride, distance=args.distance
        )
        vs_refs = [v for v in (matrix[0, 1:].tolist() + matrix[1:, 0].tolist()) if math.isfinite(v)]
        entry["tau_vs_reference"] = float(np.mean(vs_refs)) if vs_refs else float("nan")


def _monitor_section(
    report: dict, episodes: list[BagEpisode], references: Any, config: Any
) -> list[Any]:
    """Replay the monitor over episodes with ground truth; score it; return their timelines."""
    with_truth = [e for e in episodes if e.ground_truth is not None]
    if not with_truth:
        report["monitor_skipped"] = "no /tcc/ground_truth in the bags: accuracy needs ground truth"
        return []
    replay_scores, recorded_scores, timelines = [], [], []
    for e in tqdm(with_truth, desc="replay monitor", unit="ep"):
        pred = replay_monitor(e, references, config)
        replay_scores.append(score_against_truth(e, pred))
        rec = recorded_outputs(e)
        if rec is not None:
            recorded_scores.append(score_against_truth(e, rec))
        timelines.append(episode_timeline(e, pred, references.phase_names))
    report["replayed_monitor"] = {
        "summary": summarize(replay_scores),
        "episodes": [s.to_dict() for s in replay_scores],
    }
    if recorded_scores:
        report["recorded_monitor"] = {
            "summary": summarize(recorded_scores),
            "episodes": [s.to_dict() for s in recorded_scores],
        }
    return timelines


def evaluate(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    """Run the whole evaluation; returns the JSON report and the episodes' timelines."""
    from tcc_model.engine import load_bundle
    from tcc_model.stream import ReferenceSet

    config = monitor_settings(args)  # bad settings fail before any bag is read
    engine = load_bundle(args.bundle, backend=args.backend, threads=args.threads)
    references = ReferenceSet.load(args.bundle, bundle_id=engine.bundle_id)
    t_start = time.perf_counter()
    bags = [Path(b) for b in args.bags]
    episodes, counters = load_episodes(bags, engine, args.image_topic, args.episodes, args.gap)
    wall = time.perf_counter() - t_start
    splits = sorted({e.split for e in episodes})
    report: dict[str, Any] = {
        "bags": [str(b) for b in bags],
        "bundle": str(args.bundle),
        "backend": engine.backend,
        "config": {
            "image_topic": args.image_topic,
            "episodes": args.episodes
            + (f" ({', '.join(splits)})" if args.episodes == "auto" else ""),
            "gap_s": args.gap,
            "tau_stride": args.stride,
            "tau_distance": args.distance,
            "params": str(args.params) if args.params else None,
        },
        "monitor_config": asdict(config),
        "episodes": [{"name": e.name, "frames": len(e.stamps_ns)} for e in episodes],
        "throughput": {
            **counters,
            "wall_s": wall,
            "frames_per_s": counters["frames"] / wall if wall > 0 else float("nan"),
        },
    }
    _tau_section(report, episodes, references, args)
    timelines = _monitor_section(report, episodes, references, config)
    return report, timelines


# --------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m tcc_ros.evaluate_bag``."""
    from tcc_model.cli import add_bundle_arg

    p = argparse.ArgumentParser(
        prog="python -m tcc_ros.evaluate_bag",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("bags", nargs="+", help="bag directories (MCAP or sqlite3)")
    add_bundle_arg(p)
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument(
        "--episodes",
        choices=EPISODE_MODES,
        default="auto",
        help="how to cut bags into episodes (default auto: at /tcc/episode markers when the "
        "bag has them, else one per bag)",
    )
    p.add_argument(
        "--gap", type=float, default=1.0, help="seconds between episodes for --episodes gap"
    )
    p.add_argument(
        "--params",
        default=None,
        help="the monitor node's parameter file; its monitor: section sets the replayed "
        f"monitor (default: config/{PARAMS_NAME} of this package)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="monitor setting over the params file (MonitorConfig field), repeatable",
    )
    p.add_argument("--stride", type=int, default=2, help="Kendall's tau frame stride")
    p.add_argument("--distance", choices=["sqeuclidean", "cosine"], default="sqeuclidean")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--max-timelines", type=int, default=12, help="per-episode timeline PNGs written at most"
    )
    p.add_argument("--out", default="bag_eval")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the bags and write the reports."""
    from tcc_model.cli import check_bundle, print_written
    from tcc_model.reporting import strict_json
    from tcc_model.utils import write_text_atomic
    from tcc_ros.bag_report import markdown, write_plots

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    if not args.gap > 0:
        parser.error(f"--gap must be > 0 seconds, got {args.gap}")
    check_bundle(args.bundle)
    args.params = args.params or default_params()
    report, timelines = evaluate(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(timelines, out, max(0, args.max_timelines))
    write_text_atomic(out / "bag_eval.json", strict_json(report))
    write_text_atomic(out / "bag_eval.md", markdown(report))
    print(markdown(report))
    written: dict[str, Any] = {"report": out / "bag_eval.md", "data": out / "bag_eval.json"}
    if report["plots"]:
        written["plots"] = f"{out}/ ({', '.join(report['plots'][:2])}, ...)"
    print_written(written)
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
