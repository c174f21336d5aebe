"""Benchmark of the streaming monitor: the bundle's monitor, its variants and the baseline.

Episodes are fed frame by frame (embedding + the 16 x 16 thumbnail the live monitor takes from
each frame). Two sources:

* ``--bundle B --dataset D``: references from ``--ref-split`` normal episodes and calibration on
  the normal episodes of ``--calib-dataset``/``--calib-split``, built by the same functions as
  ``python -m tcc_model.reference`` (:func:`tcc_model.reference.build_references`,
  :func:`~tcc_model.reference.calibrate_references`), so ``shipped`` IS the monitor that
  command writes into the bundle; evaluation on ``--split`` of ``--test-dataset``;
* ``--synthetic`` (default without ``--bundle``): a smooth synthetic task
  (``benchmarks/stream_synthetic.py``).

Every method is calibrated on its own replay of the calibration episodes (the nearest-neighbour
baseline too). Scoring (:func:`tcc_model.monitor_metrics.alarm_outcome`): an anomaly is caught by
an alarm raised at or after its onset; an alarm raised before the onset is a false alarm. Per
anomaly type: episode AUROC (episode score = max frame score), caught, median and p90 delay in
frames; false alarms per 100 normal episodes (and pre-onset ones), cost per frame with a
5,000-frame reference. Choose settings on a dev split; report the held-out test split once.

    python benchmarks/bench_stream.py --synthetic
    python benchmarks/bench_stream.py --bundle B --dataset folder:DATA --split test \\
        --calib-dataset folder:CALIB --test-dataset folder:HELDOUT
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tcc_model.reporting import fmt  # noqa: E402

OLD_DETECTORS = ("off_trajectory", "progress_stall", "progress_backwards", "phase_skip")
ALL_DETECTORS = (
    "off_trajectory",
    "stillness",
    "direction",
    "appearance",
    "phase_skip",
    "progress_stall",
    "progress_backwards",
)
PREVIOUS_DEFAULT = ("off_trajectory", "stillness", "direction", "appearance", "phase_skip")
METHODS: dict[str, dict[str, Any]] = {
    # the monitor tcc_model.reference writes into the bundle: MonitorConfig() and its calibration
    "shipped": {"monitor": "hmm", "method": "tail"},
    "previous_default": {"monitor": "hmm", "method": "fused", "detectors": PREVIOUS_DEFAULT},
    "old_detectors": {"monitor": "hmm", "method": "bonferroni", "detectors": OLD_DETECTORS},
    "all_detectors": {"monitor": "hmm", "method": "tail", "detectors": ALL_DETECTORS},
    "nearest_neighbour": {"monitor": "nn", "method": "tail", "phase_source": "alignment"},
}
TARGETS = {
    "auroc": ">= 0.97 (>= 0.95 per type)",
    "caught": ">= 90%",
    "median_delay": "<= 8 frames",
    "false_alarms_per_100_normal": "<= 1",
    "phase_accuracy": ">= 0.95",
    "progress_mae": "<= 0.02",
    "ms_per_frame_5000": "<= 1 ms",
}


def _auroc(normal: Sequence[float], anomalous: Sequence[float]) -> float:
    """P(an anomalous episode scores above a normal one), ties half."""
    if not normal or not anomalous:
        return float("nan")
    a, n = np.asarray(anomalous)[:, None], np.asarray(normal)[None, :]
    return float(np.mean((a > n) + 0.5 * (a == n)))


def replay(
    monitor: Any, episodes: Sequence[Any], timelines: list[Any] | None = None
) -> list[dict[str, Any]]:
    """Per-episode outcome of the monitor on ``episodes`` (EmbeddedEpisode).

    ``timelines``: a list to append each episode's
    :func:`~tcc_model.visualize.timeline.timeline_from_results` to.
    """
    from tcc_model.monitor_metrics import alarm_outcome

    out = []
    for ep in episodes:
        results, maxima = _run_with_maxima(monitor, ep)
        if timelines is not None:
            timelines.append(_timeline(monitor, ep, results))
        flags = np.array([r.anomaly for r in results])
        delay, false_alarm = alarm_outcome(flags, ep.onset if ep.anomaly else None)
        fired = [r.detector for r in results if r.anomaly]
        record = {
            "name": ep.name,
            "anomaly": ep.anomaly,
            "score": max((r.anomaly_score for r in results if r.valid), default=0.0),
            "delay": delay,
            "false_alarm": false_alarm,
            "detector": fired[0] if fired else "",
            "maxima": maxima,
        }
        if ep.anomaly is None:
            progress = np.array([r.progress for r in results])
            record["abs_err"] = float(np.nanmean(np.abs(progress - ep.progress)))
            record["phase_hits"] = float(
                np.mean(np.array([r.phase_id for r in results]) == ep.phase_ids)
            )
            record["frames"] = len(results)
        out.append(record)
    return out


def _run_with_maxima(monitor: Any, ep: Any) -> tuple[list[Any], dict[str, float]]:
    """The monitor's results on ``ep`` and each detector statistic's largest value (at or after
    the onset for an anomalous episode: what a threshold could catch it with)."""
    stats: list[dict[str, float]] = []
    results = monitor.run(ep.embeddings, ep.stamps, ep.pixels, statistics=stats)
    start = max(ep.onset, 0) if ep.anomaly is not None else 0
    frames = [s for s, r in zip(stats[start:], results[start:]) if r.valid]
    return results, {k: max(float(s[k]) for s in frames) for k in (frames[0] if frames else {})}


def _maxima_table(records: list[dict[str, Any]], detectors: Sequence[str], normal: bool):
    """``[episodes, detectors]`` statistic maxima of the normal (or the anomalous) records."""
    rows = [r["maxima"] for r in records if (r["anomaly"] is None) == normal]
    values = [[row.get(d, 0.0) for d in detectors] for row in rows]
    return np.array(values, dtype=float).reshape(-1, len(detectors))


def ceiling(records: list[dict[str, Any]], detectors: Sequence[str]) -> dict[str, int]:
    """:func:`~tcc_model.monitor_metrics.threshold_ceiling` of ``detectors``' statistics at 0, 1
    and 2 false alarms among the normal episodes."""
    from tcc_model.monitor_metrics import threshold_ceiling

    normal = _maxima_table(records, detectors, True)
    anomalous = _maxima_table(records, detectors, False)
    return {str(k): threshold_ceiling(normal, anomalous, k) for k in (0, 1, 2)}


#: Largest --fresh-normals report read (a 300-episode report is ~1 MB).
MAX_REPORT_BYTES = 256 * 2**20


def fresh_ceiling(
    records: list[dict[str, Any]],
    fresh: list[dict[str, Any]],
    rate: float,
    detectors: Sequence[str],
) -> dict[str, Any]:
    """The ceiling with thresholds set on ``fresh`` normal episodes instead of the test's own.

    Each detector just above the fresh normals' maxima once ``floor(rate x n)`` of the ``n``
    fresh episodes (those that block the most catches) are given up: what any calibration could
    catch at that false-alarm rate with thresholds that hold for that many normal runs.
    """
    from tcc_model.monitor_metrics import threshold_ceiling

    n = sum(r["anomaly"] is None for r in fresh)
    allowed = math.floor(rate * n + 1e-9)
    out: dict[str, Any] = {"normal_episodes": n, "allowed_false_alarms": allowed}
    for key, names in (("detectors", detectors), ("all_statistics", ALL_DETECTORS)):
        normal = _maxima_table(fresh, names, True)
        anomalous = _maxima_table(records, names, False)
        out[key] = threshold_ceiling(normal, anomalous, allowed)
    return out


def load_fresh_normals(path: Path) -> dict[str, dict[str, Any]]:
    """Per method: ``records`` and ``thresholds`` of a bench_stream report on normal episodes
    (``--fresh-normals``)."""
    from tcc_model.errors import ConfigError

    try:
        size = path.stat().st_size
    except OSError as err:
        raise ConfigError(f"--fresh-normals {path}: cannot be read ({err})") from err
    if size > MAX_REPORT_BYTES:
        raise ConfigError(
            f"--fresh-normals {path}: {size} bytes, more than a bench_stream report "
            f"({MAX_REPORT_BYTES} at most); pass the JSON written by --out"
        )
    try:
        results = json.loads(path.read_text())["results"]
        return {
            name: {"records": row["records"], "thresholds": row["thresholds"]}
            for name, row in results.items()
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--fresh-normals {path}: not a bench_stream --out report with records ({err}); "
            "write one with --test-dataset <normal episodes> --out"
        ) from err


def add_fresh_ceilings(
    rows: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]], args: argparse.Namespace
) -> None:
    """``ceiling.fresh_normals`` of every method the ``--fresh-normals`` report also ran.

    The statistics depend on the calibration (profiles, temperature), so the report must come
    from the same bundle and calibration: its thresholds must be this run's.
    """
    from tcc_model.errors import ConfigError

    for name, row in rows.items():
        if name not in fresh:
            continue
        theirs, ours = fresh[name]["thresholds"], row["thresholds"]
        if theirs.keys() != ours.keys() or not np.allclose(
            [theirs[k] for k in ours], list(ours.values()), rtol=1e-9, atol=0.0
        ):
            raise ConfigError(
                f"--fresh-normals {args.fresh_normals}: method {name} was calibrated differently "
                f"there (thresholds {theirs} against {ours}); run it with this bundle, "
                "--calib-dataset and --false-alarm-rate"
            )
        row["ceiling"]["fresh_normals"] = fresh_ceiling(
            row["records"], fresh[name]["records"], args.false_alarm_rate, list(ours)
        )


def _timeline(monitor: Any, ep: Any, results: list[Any]) -> Any:
    from tcc_model.visualize.timeline import timeline_from_results

    mask = None
    if ep.anomaly is not None and ep.onset >= 0:
        mask = np.arange(len(results)) >= ep.onset
    label = ep.anomaly or "normal"
    return timeline_from_results(
        f"{ep.name} ({label})",
        results,
        list(monitor.references.phase_names),
        true_progress=np.asarray(ep.progress, dtype=float),
        true_phase=np.asarray(ep.phase_ids),
        anomaly_mask=mask,
        fps=float(getattr(ep, "fps", monitor.fps)),
    )


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per anomaly type and overall: AUROC, caught, median / p90 delay; false alarms."""
    normal = [r for r in records if r["anomaly"] is None]
    anomalous = [r for r in records if r["anomaly"] is not None]
    frames = np.array([r["frames"] for r in normal], dtype=float)
    out: dict[str, Any] = {
        "normal_episodes": len(normal),
        "false_alarms_per_100_normal": 100.0
        * sum(r["false_alarm"] for r in normal)
        / max(len(normal), 1),
        "pre_onset_false_alarms": sum(r["false_alarm"] for r in anomalous),
        "progress_mae": float(np.average([r["abs_err"] for r in normal], weights=frames))
        if normal
        else math.nan,
        "phase_accuracy": float(np.average([r["phase_hits"] for r in normal], weights=frames))
        if normal
        else math.nan,
    }
    normal_scores = [r["score"] for r in normal]
    kinds = sorted({r["anomaly"] for r in anomalous})
    for kind in [*kinds, "all"]:
        group = [r for r in anomalous if kind in ("all", r["anomaly"])]
        delays = [r["delay"] for r in group if r["delay"] >= 0]
        out[kind] = {
            "episodes": len(group),
            "auroc": _auroc(normal_scores, [r["score"] for r in group]),
            "caught": len(delays),
            "median_delay": float(np.median(delays)) if delays else math.nan,
            "p90_delay": float(np.percentile(delays, 90)) if delays else math.nan,
            "detectors": sorted({r["detector"] for r in group if r["delay"] >= 0}),
        }
    return out


def cost_per_frame(monitor_cls: type, config: Any, dim: int, seed: int = 0) -> dict[str, float]:
    """Milliseconds per frame (best of 3 runs of 300 frames), every detector on, with pixels."""
    from tcc_model.stream import (
        DEFAULT_PHASE_LAGS,
        DETECTORS,
        ReferenceSet,
        episode_signals,
        fit_profiles,
    )

    rng = np.random.default_rng(seed)
    out = {}
    for count, length in [(1, 1000), (1, 5000), (20, 250)]:
        embeddings = [rng.normal(size=(length, dim)).astype(np.float32) for _ in range(count)]
        pixels = rng.uniform(size=(length, 768)).astype(np.float32)
        progress = np.linspace(0, 1, length)
        refs = ReferenceSet(
            embeddings,
            [np.zeros(length, int)] * count,
            ["all"],
            [progress] * count,
            [f"r{i}" for i in range(count)],
            "cost",
            fps=[12.0] * count,
            phase_weights=rng.normal(size=(1, dim * (1 + len(DEFAULT_PHASE_LAGS)))),
            phase_bias=np.zeros(1),
            phase_lags=DEFAULT_PHASE_LAGS,
        )
        refs.profiles = fit_profiles([progress], [episode_signals(embeddings[0], pixels, 2, 3)])
        thresholds = {d.threshold: 1e9 for d in DETECTORS.values()}
        monitor = monitor_cls(refs, replace(config, **thresholds))
        idx = np.linspace(0, length - 1, 300).astype(int)
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            monitor.run(embeddings[0][idx], None, pixels[idx])
            best = min(best, time.perf_counter() - start)
        out[f"{count}x{length}"] = 1e3 * best / len(idx)
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def run_method(
    name: str,
    references: Any,
    calib: list,
    tests: list,
    args: argparse.Namespace,
    timelines: list[Any] | None = None,
    shared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate one method on its own replay of ``calib`` and score it on ``tests``.

    ``shared``: the temperature and phase source another HMM method's calibration chose on the
    same episodes, reused by the HMM variants (their thresholds still come from their own replay;
    this halves their calibration time). Not used for the nearest-neighbour baseline.
    """
    from tcc_model.reference import calibrate_references
    from tcc_model.stream import MonitorConfig, NearestNeighborMonitor, ProgressMonitor

    spec = METHODS[name]
    cls = NearestNeighborMonitor if spec["monitor"] == "nn" else ProgressMonitor
    fields: dict[str, Any] = {}
    if spec.get("detectors") or args.detectors:
        fields["detectors"] = tuple(spec.get("detectors") or args.detectors)
    if spec.get("phase_source"):
        fields["phase_source"] = spec["phase_source"]
    elif shared and spec["monitor"] == "hmm":
        fields.update(shared)
    config = MonitorConfig(**fields)
    refs = copy.copy(references)
    start = time.perf_counter()
    cal = calibrate_references(
        refs,
        calib,
        args.false_alarm_rate,
        config,
        method=spec["method"],
        strict=name == "shipped",  # the bundle's monitor; the others say when they fall back
        monitor_class=cls,
    )
    print(f"{name}: calibrated in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    records = replay(cls(refs, config), tests, timelines)
    summary = summarize(records)
    summary["ceiling"] = {
        "detectors": ceiling(records, config.detectors),
        "all_statistics": ceiling(records, ALL_DETECTORS),
    }
    summary["seconds"] = time.perf_counter() - start
    summary["ms_per_frame"] = cost_per_frame(cls, config, references.dim)
    summary["calibration"] = {
        k: cal[k]
        for k in (
            "method",
            "num_episodes",
            "num_excluded",
            "excluded_episodes",
            "episodes_needed",
            "achieved_false_alarm_rate",
            "phase_source",
            "temperature",
        )
    }
    summary["detector_states"] = {k: v["state"] for k, v in cal["detector_states"].items()}
    summary["thresholds"] = {k: v["threshold"] for k, v in cal["detector_states"].items()}
    summary["calibration_maxima"] = cal["episode_maxima"]
    summary["records"] = records
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    """``digits`` significant digits; missing values (None, NaN) as ``n/a``."""
    return fmt(value, f"{{:.{digits}g}}")


def print_tables(rows: dict[str, dict[str, Any]], source: str, args: argparse.Namespace) -> None:
    kinds = [k for k in next(iter(rows.values())) if isinstance(rows[next(iter(rows))][k], dict)]
    kinds = [k for k in kinds if "auroc" in rows[next(iter(rows))][k]]
    print(f"\n### Streaming monitor: {source}\n")
    print(
        f"False-alarm rate asked: {args.false_alarm_rate} per episode. Choices (detectors, "
        "calibration method) are made on a dev split, never on the test split.\n"
    )
    head = "| method | " + " | ".join(f"{k} AUROC / caught / median, p90 delay" for k in kinds)
    print(head + " | FA/100 normal (+ pre-onset) | progress MAE | phase acc. | ms/frame (5,000) |")
    print("|---" * (len(kinds) + 5) + "|")
    for name, row in rows.items():
        cells = []
        for k in kinds:
            r = row[k]
            cells.append(
                f"{_fmt(r['auroc'])} / {r['caught']}/{r['episodes']} / "
                f"{_fmt(r['median_delay'])}, {_fmt(r['p90_delay'])}"
            )
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {_fmt(row['false_alarms_per_100_normal'])} (+{row['pre_onset_false_alarms']})"
            f" | {_fmt(row['progress_mae'])} | {_fmt(row['phase_accuracy'])}"
            f" | {_fmt(row['ms_per_frame']['1x5000'])} |"
        )
    for name, row in rows.items():
        cal = row["calibration"]
        print(
            f"\n{name}: calibration {cal['method']} on {cal['num_episodes']} episodes "
            f"({cal['num_excluded']} excluded, {cal['episodes_needed']} needed, achieved rate "
            f"{_fmt(cal['achieved_false_alarm_rate'])}); detectors "
            + ", ".join(
                f"{k} {v} ({_fmt(row['thresholds'][k], 4)})"
                for k, v in row["detector_states"].items()
            )
            + "; caught by "
            + ", ".join(f"{k}: {row[k]['detectors']}" for k in kinds if k != "all")
        )
        top = row["ceiling"]
        print(
            f"{name}: ceiling (thresholds chosen on these test episodes themselves; no "
            f"calibration can do better with these statistics): its detectors catch "
            f"{top['detectors']['0']} / {top['detectors']['1']} / {top['detectors']['2']} of "
            f"{row['all']['episodes']} at 0 / 1 / 2 false alarms in {row['normal_episodes']} "
            f"normal episodes; all {len(ALL_DETECTORS)} statistics "
            f"{top['all_statistics']['0']} / {top['all_statistics']['1']} / "
            f"{top['all_statistics']['2']}"
        )
        if "fresh_normals" in top:
            fr = top["fresh_normals"]
            print(
                f"{name}: ceiling with thresholds set on {fr['normal_episodes']} fresh normal "
                f"episodes ({fr['allowed_false_alarms']} of them allowed to alarm: the rate "
                f"asked): its detectors catch {fr['detectors']} of {row['all']['episodes']}, "
                f"all {len(ALL_DETECTORS)} statistics {fr['all_statistics']}"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", action="store_true", help="synthetic episodes (default)")
    p.add_argument("--bundle", help="bundle folder: embed real episodes with its engine")
    p.add_argument("--dataset", default="sim_pouring", help="references (and default for all)")
    p.add_argument("--ref-split", default="train")
    p.add_argument("--calib-dataset", default=None, help="normal calibration episodes' dataset")
    p.add_argument("--calib-split", default="val")
    p.add_argument("--calib-episodes", type=int, default=None, help="cap on calibration episodes")
    p.add_argument("--test-dataset", default=None, help="evaluation dataset (default --dataset)")
    p.add_argument("--split", default="test", help="evaluation split (dev or held-out test)")
    p.add_argument("--references", type=int, default=20, help="as tcc_model.reference --max-videos")
    p.add_argument("--classifier-videos", type=int, default=None)
    p.add_argument("--normal-episodes", type=int, default=100)
    p.add_argument("--anomaly-episodes", type=int, default=25, help="per type (synthetic)")
    p.add_argument("--false-alarm-rate", type=float, default=0.01)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--detectors", nargs="+", default=None, help="override the new detector set")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dim", type=int, default=128, help="embedding size (synthetic)")
    p.add_argument("--noise", type=float, default=0.06, help="embedding noise (synthetic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the JSON report (episodes too)")
    p.add_argument(
        "--fresh-normals",
        type=Path,
        default=None,
        help="a report of this bench on normal episodes only (same bundle and calibration): "
        "also report the ceiling with thresholds set on those episodes at the rate asked",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out report")
    p.add_argument(
        "--timeline",
        type=Path,
        default=None,
        help="per-episode timeline of the first method (default with --out: OUT.timeline.png)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "bench_stream",
        help="per-episode embeddings, keyed by bundle and episode (a re-run costs seconds)",
    )
    args = p.parse_args(argv)
    if args.out and args.timeline is None:
        args.timeline = args.out.with_suffix(".timeline.png")
    for path in (args.out, args.timeline):
        if path is not None and path.exists() and not args.overwrite:
            from tcc_model.errors import ConfigError

            raise ConfigError(
                f"{path} exists; pass --overwrite to replace it or choose another --out"
            )
    if args.synthetic or not args.bundle:
        args.calib_episodes = args.calib_episodes or 120
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from stream_data import bundle_data, synthetic_data

    if args.bundle:
        references, calib, tests, source = bundle_data(args)
    else:
        references, calib, tests, source = synthetic_data(args)
    timelines: list[Any] = []
    rows: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    for i, name in enumerate(args.methods):
        row = run_method(
            name, references, calib, tests, args, timelines if i == 0 else None, shared
        )
        rows[name] = row
        if name == "shipped" and not shared:
            cal = row["calibration"]
            shared = {"temperature": cal["temperature"], "phase_source": cal["phase_source"]}
    if args.fresh_normals is not None:
        add_fresh_ceilings(rows, load_fresh_normals(args.fresh_normals), args)
    report = {"source": source, "false_alarm_rate": args.false_alarm_rate, "results": rows}
    written: dict[str, Path] = {}
    if args.out:  # first: the measurements survive a failure in the printing below
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        written["report"] = args.out
    print_tables(rows, source, args)
    if args.timeline and timelines:
        from tcc_model.visualize.timeline import plot_timeline_overview

        written[f"timeline ({args.methods[0]})"] = plot_timeline_overview(
            timelines, args.timeline, columns=8
        )
    if written:
        from tcc_model.cli import print_written

        print_written(written)
    slim = {k: {kk: vv for kk, vv in v.items() if kk != "records"} for k, v in rows.items()}
    print("\n" + json.dumps({"source": source, "results": slim}, default=str))
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
