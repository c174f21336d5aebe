"""Benchmark of the streaming monitor against the per-frame nearest-neighbour baseline.

Episodes are fed frame by frame. Two sources of embeddings:

* ``--bundle B --dataset sim_pouring``: references from ``--ref-split`` normal episodes, thresholds
  calibrated on ``--calib-split`` normal episodes, evaluation on ``--split`` (normal + anomalies)
  of ``--test-dataset`` (default: the same dataset), all embedded with the bundle's engine;
* ``--synthetic`` (default without ``--bundle``): embeddings generated along a smooth random curve
  with the pouring simulator's timing statistics (per-segment speeds, short natural pauses, and the
  anomalies ``stall``, ``reversed``, ``drop`` (leaves the trajectory), ``skip`` (a phase never
  happens)). It measures the aligner, not a learned model.

The HMM band filter takes the phase from the references' linear phase classifier (fitted on every
labelled normal video of --ref-split, or --classifier-videos of them; real data only) or from the
alignment, as the calibration chose; the baseline from its nearest reference frame's label.

Metrics: progress MAE vs ground truth from key events and causal phase accuracy (normal episodes),
per-episode anomaly AUROC (episode score = max frame anomaly score), median detection delay in
frames after the labelled onset, false alarms per 100 normal episodes, cost per frame for
references of 100 to 5,000 frames. Prints a Markdown table and a JSON line.

    python benchmarks/bench_stream.py --synthetic
    python benchmarks/bench_stream.py --bundle BUNDLE --dataset sim_pouring
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tcc_model.data.format import progress_from_key_events
from tcc_model.stream import (
    DEFAULT_PHASE_LAGS,
    MonitorConfig,
    NearestNeighborMonitor,
    ProgressMonitor,
    ReferenceSet,
    calibrate,
)

TARGETS = {
    "progress_mae": ("<=", 0.03),
    "phase_accuracy": (">=", 0.95),
    "auroc": (">=", 0.97),
    "median_delay_frames": ("<=", 8),
    "false_alarms_per_100_normal": ("<=", 1.0),
    "ms_per_frame_5000": ("<=", 1.0),
}
PHASE_NAMES = ["approach", "grasp_lift", "pour", "return", "release"]


@dataclass
class EvalEpisode:
    """Embeddings of one episode with what the benchmark compares against."""

    embeddings: np.ndarray
    phase_ids: np.ndarray
    progress: np.ndarray
    fps: float
    anomaly: str | None = None
    onset: int = -1
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Synthetic episodes
# --------------------------------------------------------------------------------------------
class SyntheticTask:
    """A smooth random trajectory in R^D standing in for a learned embedding of the task."""

    def __init__(
        self, dim: int = 128, seed: int = 0, fps: float = 12.0, noise: float = 0.06
    ) -> None:
        rng = np.random.default_rng(seed)
        terms = 6
        self.dim, self.fps, self.noise = dim, fps, noise
        self.amp = rng.normal(size=(terms, dim)) / np.arange(1, terms + 1)[:, None] / np.sqrt(dim)
        self.phase = rng.uniform(0, 2 * np.pi, size=(terms, dim))
        self.freq = np.arange(1, terms + 1)[:, None]
        self.rng = np.random.default_rng(seed + 1)

    def curve(self, s: np.ndarray) -> np.ndarray:
        """Embedding of task time ``s``: the arm's pose revisits states (out and back), the
        scene state (fill level) changes monotonically and weaker."""
        pose = np.interp(s, [0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0], [0, 0.35, 0.7, 0.9, 0.7, 0.35, 0.05])
        return self._smooth(pose, 0) + 0.3 * self._smooth(np.asarray(s), 1)

    def _smooth(self, u: np.ndarray, which: int) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)[:, None, None]
        amp = self.amp if which == 0 else self.amp[::-1]
        return np.sum(amp * np.sin(np.pi * self.freq * u + self.phase * (1 + which)), axis=1)

    def timeline(self) -> np.ndarray:
        """Curve parameter per frame: random segment speeds plus short natural pauses."""
        rng, k = self.rng, len(PHASE_NAMES)
        parts = []
        for p in range(k):
            seconds = rng.uniform(0.9, 2.0)
            n = max(3, int(round(seconds * self.fps)))
            parts.append(p / k + (np.arange(n) / n) / k)
            if rng.random() < 0.3:  # natural pause 0.2-0.6 s
                parts.append(np.full(int(rng.uniform(0.2, 0.6) * self.fps), parts[-1][-1]))
        return np.concatenate(parts + [np.ones(1)])

    def episode(self, anomaly: str | None = None) -> EvalEpisode:
        rng, k, fps, noise = self.rng, len(PHASE_NAMES), self.fps, self.noise
        s = self.timeline()
        onset = -1
        drift = np.zeros((len(s), self.dim))
        if anomaly == "stall":
            onset = int(rng.integers(len(s) // 5, 4 * len(s) // 5))
            freeze = np.full(int(rng.uniform(2.0, 3.5) * fps), s[onset])
            s = np.concatenate([s[:onset], freeze, s[onset:]])
            drift = np.zeros((len(s), self.dim))
        elif anomaly == "reversed":
            onset = int(rng.integers(len(s) // 4, 3 * len(s) // 4))
            back = int(rng.uniform(0.6, 1.2) * fps)
            s = np.concatenate([s[:onset], s[onset : max(onset - back, 0) : -1], s[onset - back :]])
            drift = np.zeros((len(s), self.dim))
        elif anomaly == "drop":
            onset = int(rng.integers(len(s) // 4, 3 * len(s) // 4))
            direction = rng.normal(size=self.dim)
            direction *= 0.3 * np.linalg.norm(self.amp.sum(0)) / np.linalg.norm(direction)
            ramp = np.clip((np.arange(len(s)) - onset + 1) / (0.5 * fps), 0.0, 1.0)
            drift = ramp[:, None] * direction
        elif anomaly == "skip":
            skipped = int(rng.integers(1, k - 1))
            keep = (s < skipped / k) | (s >= (skipped + 1) / k)
            onset = int(np.argmax(~keep))
            s = s[keep]
            drift = np.zeros((len(s), self.dim))
        elif anomaly is not None:
            raise ValueError(f"unknown synthetic anomaly {anomaly!r}")
        style = rng.normal(scale=noise / 2, size=self.dim)  # per-episode appearance offset
        scale = noise / np.sqrt(self.dim)
        emb = self.curve(s) + drift + style / np.sqrt(self.dim)
        emb += rng.normal(scale=scale, size=emb.shape)
        phase_ids = np.minimum((s * k).astype(int), k - 1)
        events = [int(np.argmax(phase_ids >= p)) for p in range(1, k) if (phase_ids >= p).any()]
        progress = (
            progress_from_key_events(len(s), events) if anomaly is None else np.full(len(s), np.nan)
        )
        return EvalEpisode(emb.astype(np.float32), phase_ids, progress, fps, anomaly, onset)


def synthetic_data(args: argparse.Namespace) -> tuple[ReferenceSet, list, list]:
    task = SyntheticTask(dim=args.dim, seed=args.seed, noise=args.noise)
    refs = [task.episode() for _ in range(args.references)]
    key_events = [
        {PHASE_NAMES[p]: int(np.argmax(r.phase_ids >= p)) for p in range(1, len(PHASE_NAMES))}
        for r in refs
    ]
    references = ReferenceSet.from_episodes(
        [r.embeddings for r in refs],
        [r.phase_ids for r in refs],
        PHASE_NAMES,
        key_events,
        "synthetic",
        [f"ref{i:02d}" for i in range(len(refs))],
        task.fps,
    )
    calib = [task.episode() for _ in range(args.calib_episodes)]
    tests = [task.episode() for _ in range(args.normal_episodes)]
    for kind in ("stall", "reversed", "drop", "skip"):
        tests += [task.episode(kind) for _ in range(args.anomaly_episodes)]
    return references, calib, tests


# --------------------------------------------------------------------------------------------
# Bundle + dataset
# --------------------------------------------------------------------------------------------
def bundle_data(args: argparse.Namespace) -> tuple[ReferenceSet, list, list]:
    from tcc_model.engine import load_bundle
    from tcc_model.reference import (
        build_references,
        embed_video,
        load_episodes,
        normal_episodes,
        split_references,
    )

    engine = load_bundle(args.bundle, backend=args.backend, threads=args.threads)
    labelled = normal_episodes(load_episodes(args.dataset, args.ref_split))
    ref_eps, extra = split_references(labelled, args.references, args.classifier_videos)
    references = build_references(engine, ref_eps, classifier_episodes=extra)

    def to_eval(ep: Any) -> EvalEpisode:
        lab = ep.labels
        mask = np.asarray(lab.anomaly_mask or [], dtype=bool)
        onset = int(np.argmax(mask)) if mask.any() else -1
        progress = progress_from_key_events(lab.num_frames, lab.key_events)
        emb = embed_video(engine, ep.load_frames())
        return EvalEpisode(
            emb, lab.phase_id_array(), progress, lab.fps, lab.anomaly, onset, ep.name
        )

    calib_eps = normal_episodes(load_episodes(args.dataset, args.calib_split), args.calib_episodes)
    calib = [to_eval(e) for e in calib_eps]
    test_eps = load_episodes(args.test_dataset or args.dataset, args.split)
    normals = [e for e in test_eps if e.labels.anomaly is None][: args.normal_episodes]
    anomalous = [e for e in test_eps if e.labels.anomaly is not None]
    tests = [to_eval(e) for e in normals + anomalous]
    return references, calib, tests


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def auroc(normal_scores: list[float], anomaly_scores: list[float]) -> float:
    """Probability that an anomalous episode scores above a normal one (ties count half)."""
    if not normal_scores or not anomaly_scores:
        return float("nan")
    a = np.asarray(anomaly_scores)[:, None]
    n = np.asarray(normal_scores)[None, :]
    return float(np.mean((a > n) + 0.5 * (a == n)))


def evaluate(monitor: Any, tests: list[EvalEpisode]) -> dict[str, Any]:
    abs_err, phase_hits, normal_scores, false_alarms = [], [], [], 0
    per_kind: dict[str, dict[str, list]] = {}
    for ep in tests:
        stamps = np.arange(len(ep.embeddings)) / ep.fps
        results = monitor.run(ep.embeddings, stamps)
        flags = np.array([r.anomaly for r in results])
        score = max((r.anomaly_score for r in results if r.valid), default=0.0)
        if ep.anomaly is None:
            progress = np.array([r.progress for r in results])
            abs_err.append(np.abs(progress - ep.progress))
            phase_hits.append(np.array([r.phase_id for r in results]) == ep.phase_ids)
            normal_scores.append(score)
            false_alarms += int(np.sum(flags[1:] & ~flags[:-1]) + flags[0])
            continue
        entry = per_kind.setdefault(ep.anomaly, {"scores": [], "delays": []})
        entry["scores"].append(score)
        after = np.flatnonzero(flags[max(ep.onset, 0) :])
        entry["delays"].append(int(after[0]) if after.size else None)
    out: dict[str, Any] = {
        "progress_mae": float(np.mean(np.concatenate(abs_err))) if abs_err else float("nan"),
        "phase_accuracy": float(np.mean(np.concatenate(phase_hits))) if phase_hits else math.nan,
        "false_alarms_per_100_normal": 100.0 * false_alarms / max(len(normal_scores), 1),
        "normal_episodes": len(normal_scores),
    }
    all_scores, all_delays = [], []
    for kind, entry in sorted(per_kind.items()):
        delays = [d for d in entry["delays"] if d is not None]
        out[f"auroc_{kind}"] = auroc(normal_scores, entry["scores"])
        out[f"detected_{kind}"] = len(delays) / len(entry["delays"])
        out[f"median_delay_{kind}"] = float(np.median(delays)) if delays else float("nan")
        all_scores += entry["scores"]
        all_delays += delays
    out["auroc"] = auroc(normal_scores, all_scores)
    out["median_delay_frames"] = float(np.median(all_delays)) if all_delays else float("nan")
    return out


def cost_per_frame(monitor_cls: type, dim: int, seed: int, frames: int = 300) -> dict[str, float]:
    """Milliseconds per frame (best of 3 runs) for several reference sizes."""
    rng = np.random.default_rng(seed)
    out = {}
    for refs_count, length in [(1, 100), (1, 1000), (1, 5000), (10, 500)]:
        embeddings = [rng.normal(size=(length, dim)).astype(np.float32) for _ in range(refs_count)]
        references = ReferenceSet(
            embeddings,
            [np.zeros(length, int)] * refs_count,
            ["all"],
            [np.linspace(0, 1, length)] * refs_count,
            [f"r{i}" for i in range(refs_count)],
            "cost",
            fps=[12.0] * refs_count,
            # the classifier's cost is counted too
            phase_weights=rng.normal(size=(1, dim * (1 + len(DEFAULT_PHASE_LAGS)))),
            phase_bias=np.zeros(1),
            phase_lags=DEFAULT_PHASE_LAGS,
        )
        monitor = monitor_cls(references, MonitorConfig(distance_threshold=1e9))
        stream = embeddings[0][np.linspace(0, length - 1, frames).astype(int)]
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            monitor.run(stream)
            best = min(best, time.perf_counter() - start)
        out[f"{refs_count}x{length}"] = 1e3 * best / frames
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", action="store_true", help="synthetic embeddings (default)")
    p.add_argument("--bundle", help="bundle directory: embed real episodes with its engine")
    p.add_argument("--dataset", default="sim_pouring")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--test-dataset",
        default=None,
        help="evaluate on --split of this dataset instead (e.g. a larger held-out generated set)",
    )
    p.add_argument("--ref-split", default="train")
    p.add_argument("--calib-split", default="val")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--references", type=int, default=5, help="number of reference episodes")
    p.add_argument(
        "--classifier-videos",
        type=int,
        default=None,
        help="labelled videos of --ref-split for the phase classifier (default: all)",
    )
    p.add_argument("--calib-episodes", type=int, default=100)
    p.add_argument("--normal-episodes", type=int, default=100)
    p.add_argument("--anomaly-episodes", type=int, default=25, help="per anomaly type (synthetic)")
    p.add_argument("--false-alarm-rate", type=float, default=0.01)
    p.add_argument("--dim", type=int, default=128, help="embedding size (synthetic)")
    p.add_argument("--noise", type=float, default=0.06, help="embedding noise (synthetic)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.bundle:
            references, calib, tests = bundle_data(args)
            source = (
                f"bundle {args.bundle}: references and calibration from {args.dataset}, "
                f"evaluation on {args.test_dataset or args.dataset}/{args.split}"
            )
        else:
            references, calib, tests = synthetic_data(args)
            source = f"synthetic trajectories (D={args.dim}, noise {args.noise}, seed {args.seed})"
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stamps = [np.arange(len(c.embeddings)) / c.fps for c in calib]
    config = MonitorConfig()
    cal = calibrate(
        references,
        [c.embeddings for c in calib],
        args.false_alarm_rate,
        config,
        stamps,
        progress=[c.progress for c in calib],
        phase_ids=[c.phase_ids for c in calib],
    )
    rows = {}
    methods = [
        ("hmm_band", ProgressMonitor, config),  # phase from the classifier when there is one
        ("nearest_neighbour", NearestNeighborMonitor, replace(config, phase_source="alignment")),
    ]
    for name, cls, method_config in methods:
        start = time.perf_counter()
        metrics = evaluate(cls(references, method_config), tests)
        metrics["eval_seconds"] = time.perf_counter() - start
        costs = cost_per_frame(cls, references.dim, args.seed)
        metrics.update({f"ms_per_frame_{k}": v for k, v in costs.items()})
        metrics["ms_per_frame_5000"] = costs["1x5000"]
        rows[name] = metrics

    keys = list(rows["hmm_band"])
    print(f"\n### Streaming monitor: {source}\n")
    print(
        f"{references.num_references} references ({int(references.lengths.sum())} frames), "
        f"calibration: {cal['method']} on {cal['num_episodes']} normal episodes, "
        f"false-alarm rate {cal['false_alarm_rate']}; {len(tests)} test episodes.\n"
    )
    print("| metric | target | " + " | ".join(rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for key in keys:
        target = TARGETS.get(key)
        target_text = f"{target[0]} {target[1]}" if target else ""
        print(
            f"| {key} | {target_text} | " + " | ".join(_fmt(rows[r].get(key)) for r in rows) + " |"
        )
    thresholds = {
        k: cal[k]
        for k in (
            "temperature",
            "temperature_factor",
            "distance_threshold",
            "stall_seconds",
            "backwards_threshold",
            "skip_threshold",
            "phase_source",
            "phase_accuracy",
        )
    }
    print("\n" + json.dumps({"source": source, "thresholds": thresholds, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
