"""Robustness benchmark: a model on in-distribution episodes vs paired shifted episodes.

Two steps::

    # 1. render the paired sets: control/ and one folder per shifted factor plus all/
    python benchmarks/bench_robustness.py generate --out SETS --episodes 20 --seed 1000 \\
        --size 112 --shift-size 1.0 --workers 2
    # 2. the table for each bundle (python -m tcc_model.export) trained on TRAIN
    python benchmarks/bench_robustness.py run --bundle BUNDLE [BUNDLE...] \\
        --train-dataset folder:TRAIN --sets SETS [--out report.json]

Episode ``i`` of every shifted set is episode ``i`` of the control with one factor's sampling
ranges moved outside the defaults (:mod:`tcc_model.sim.ranges`; ``all``: every factor). The
generated sets use the station and the defaults of ``python -m tcc_model.data.sim_pouring
--variation station``, so a model trained on such data sees the control in distribution.

``run`` embeds every normal episode with each bundle's engine (every video decoded once).
Offline protocols (as ``python -m tcc_model.evaluate``): Kendall's tau, phase classification
with 10% of the training videos and phase progression R², the probes fitted on
``--train-dataset``'s train split. Stream columns: the monitor replayed on every episode
(bench_stream's ``replay``); with ``--monitor bundle`` (the default for a bundle with
references) it is the robot's monitor, the bundle's references, phase classifier and calibrated
thresholds; with ``--monitor fit`` references come from the train split and thresholds from the
normal ``--calib-split`` episodes. Each shifted row gives the value and the paired difference to
the control with its bootstrap standard error (:mod:`tcc_model.robustness`); the calibration
check counts the false alarms per shifted set (``robustness_report``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness_report import (  # noqa: E402
    CONTROL,
    calibration_check,
    calibration_line,
    calibration_summary,
    markdown,
    markdown_versus,
    versus,
)

SET_ORDER = ("objects", "lighting", "motion", "distractors", "liquid", "camera", "all")


# --------------------------------------------------------------------------------------------
# generate


def generate(args: argparse.Namespace) -> int:
    """Render the control and every shifted set into ``args.out`` (existing sets are kept)."""
    from tcc_model.cli import print_written, stage
    from tcc_model.data.sim_pouring import generate_dataset, sampling_ranges

    written = {}
    for name in (CONTROL, *args.factors):
        target = args.out / name
        if (target / "manifest.json").is_file():
            print(f"{target}: exists, kept", file=sys.stderr)
            continue
        shift = None if name == CONTROL else name
        ranges, record = sampling_ranges(None, 0.0, shift, args.shift_size)
        with stage(f"render {name} ({args.episodes} episodes)"):
            generate_dataset(
                target,
                args.episodes,
                size=args.size,
                seed=args.seed,
                workers=args.workers,
                progress=False,
                split_fractions=(0.0, 0.0, 1.0),
                variation="station",
                station=args.station,
                ranges=ranges,
                shift=record,
            )
        written[name] = target
    print_written(written or {"nothing (all sets exist)": args.out})
    return 0


# --------------------------------------------------------------------------------------------
# run


class _Decoded:
    """An episode whose frames are decoded once and shared by every engine."""

    def __init__(self, episode: Any) -> None:
        self._episode = episode
        self._frames = episode.load_frames()

    def load_frames(self) -> Any:
        return self._frames

    def __getattr__(self, name: str) -> Any:
        return getattr(self._episode, name)


def _embed(engines: Sequence[Any], episodes: Sequence[Any]) -> list[list[Any]]:
    """``[engine][episode]`` embedded episodes, each video decoded once."""
    from tcc_model.reference import embed_episode

    out: list[list[Any]] = [[] for _ in engines]
    for episode in episodes:
        decoded = _Decoded(episode)
        for k, engine in enumerate(engines):
            out[k].append(embed_episode(engine, decoded))
    return out


def _references(engine: Any, train: Sequence[Any], embedded: Sequence[Any], count: int) -> Any:
    """References from the first ``count`` embedded train episodes, classifier on all of them."""
    from tcc_model.stream import DEFAULT_PHASE_LAGS, ReferenceSet, fit_phase_classifier

    refs = list(zip(train, embedded))[:count]
    references = ReferenceSet.from_episodes(
        [m.embeddings for _, m in refs],
        [m.phase_ids for _, m in refs],
        list(train[0].labels.phase_names),
        [dict(e.labels.key_events) for e, _ in refs],
        engine.bundle_id,
        [m.name for _, m in refs],
        [m.fps for _, m in refs],
    )
    extra = [(m.embeddings, m.phase_ids) for m in embedded[count:]]
    fit_phase_classifier(references, lags=DEFAULT_PHASE_LAGS, extra_episodes=extra)
    return references


def _bundle_monitor(bundle: Path, engine: Any) -> tuple[Any, dict[str, Any]]:
    """The monitor the robot runs: the bundle's references, phase classifier and calibration."""
    from tcc_model.stream import ProgressMonitor, ReferenceSet, monitor_config
    from tcc_model.stream.references import reference_metadata

    references = ReferenceSet.load(bundle, engine.bundle_id)
    calibration = dict(reference_metadata(bundle).get("calibration") or {})
    calibration.setdefault("num_episodes", len(calibration.get("episodes", [])))
    return ProgressMonitor(references, monitor_config(bundle)), calibration


def _monitor_mode(args: argparse.Namespace) -> str:
    """``--monitor``: ``auto`` is ``bundle`` when every bundle has references, else ``fit``."""
    from tcc_model.errors import BundleError
    from tcc_model.stream.references import REFERENCES_JSON

    has = [(b / REFERENCES_JSON).is_file() for b in args.bundle]
    if args.no_stream:
        return "none"
    if args.monitor == "auto":
        return "bundle" if all(has) else "fit"
    if args.monitor == "bundle" and not all(has):
        missing = [str(b) for b, h in zip(args.bundle, has) if not h]
        raise BundleError(
            f"--monitor bundle: {', '.join(missing)} has no {REFERENCES_JSON}; build the "
            "references with `python -m tcc_model.reference` or use --monitor fit"
        )
    return str(args.monitor)


def _set_names(sets: Path) -> list[str]:
    names = [n for n in (CONTROL, *SET_ORDER) if (sets / n / "manifest.json").is_file()]
    if CONTROL not in names:
        from tcc_model.errors import DatasetError

        raise DatasetError(
            f"--sets {sets}: no {CONTROL}/ dataset; render the sets with "
            f"`python benchmarks/bench_robustness.py generate --out {sets}`"
        )
    return names


class _Model:
    """One bundle's probes, monitor and per-set statistics."""

    def __init__(
        self, args: argparse.Namespace, bundle: Path, engine: Any, train: list, embedded: list
    ) -> None:
        from tcc_model import robustness as rb

        self.engine, self.train, self.stats = engine, embedded[0], {}
        self.fired: dict[str, list[str]] = {}  # per set: the detector of each false alarm
        phase_names = list(train[0].labels.phase_names)
        self.probes = rb.ProtocolProbes(
            [m.embeddings for m in embedded[0]],
            [m.phase_ids for m in embedded[0]],
            len(phase_names),
        )
        self.calibration: dict[str, Any] = {}
        self.monitor = None
        if args.monitor == "bundle":
            self.monitor, self.calibration = _bundle_monitor(bundle, engine)
        elif args.monitor == "fit":
            from tcc_model.reference import calibrate_references
            from tcc_model.stream import ProgressMonitor, monitor_config

            references = _references(engine, train, embedded[0], args.references)
            config = monitor_config(None)
            self.calibration = calibrate_references(
                references, embedded[1], args.false_alarm_rate, config, strict=False
            )
            self.monitor = ProgressMonitor(copy.copy(references), config)

    def add_set(self, name: str, eps: Sequence[Any], embedded: Sequence[Any]) -> None:
        from bench_stream import replay

        from tcc_model import robustness as rb

        stats = self.probes.set_stats(
            [e.name for e in eps], [m.embeddings for m in embedded], [m.phase_ids for m in embedded]
        )
        if self.monitor is not None:
            records = replay(self.monitor, embedded)
            rb.add_stream_records(stats, records)
            self.fired[name] = [r["detector"] for r in records if r["false_alarm"]]
        self.stats[name] = stats

    def rows(self, args: argparse.Namespace) -> dict[str, Any]:
        from tcc_model import robustness as rb

        control = self.stats[CONTROL]
        rows = {CONTROL: {k: {"value": v} for k, v in rb.metric_values(control).items()}}
        for name, stats in self.stats.items():
            if name != CONTROL:
                paired = rb.paired_differences(control, stats, args.resamples, args.seed)
                rows[name] = {
                    k: {"value": d["shifted"], "diff": d["diff"], "se": d["se"]}
                    for k, d in paired.items()
                }
        return rows


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One report per bundle: per-set metrics and paired differences to the control."""
    from tcc_model.cli import check_bundle, stage
    from tcc_model.engine import load_bundle
    from tcc_model.reference import load_episodes, normal_episodes

    engines = [
        load_bundle(check_bundle(b), backend=args.backend, threads=args.threads)
        for b in args.bundle
    ]
    args.monitor = _monitor_mode(args)
    names = _set_names(args.sets)
    calib = f" and {args.calib_split}" if args.monitor == "fit" else ""
    with stage(f"embed {args.train_dataset} train{calib}"):
        train = normal_episodes(load_episodes(args.train_dataset, "train"), args.train_videos)
        train_emb = _embed(engines, train)
        calib_emb = (
            _embed(engines, normal_episodes(load_episodes(args.train_dataset, args.calib_split)))
            if args.monitor == "fit"
            else [[] for _ in engines]
        )
    models = [
        _Model(args, b, e, train, (t, c))
        for b, e, t, c in zip(args.bundle, engines, train_emb, calib_emb)
    ]
    episodes: dict[str, int] = {}
    attempts: dict[str, list] = {}
    for name in names:
        with stage(f"embed and replay {name}"):
            eps = normal_episodes(load_episodes(f"folder:{args.sets / name}", args.split))
            for model, embedded in zip(models, _embed(engines, eps)):
                model.add_set(name, eps, embedded)
        episodes[name] = len(eps)
        attempts[name] = [(e.labels.metadata or {}).get("attempt") for e in eps]
    unpaired = {  # simulated from another attempt than the control's: not an exact pair
        name: sum(a != c for a, c in zip(tries, attempts[CONTROL]))
        for name, tries in attempts.items()
        if name != CONTROL
    }
    reports = [
        {
            "bundle": str(bundle),
            "train_dataset": args.train_dataset,
            "sets": str(args.sets),
            "episodes": episodes,
            "unpaired_episodes": unpaired,
            "train_videos": len(train),
            "monitor": args.monitor,
            "calibration": calibration_summary(model.calibration, args),
            "resamples": args.resamples,
            "rows": model.rows(args),
            "calibration_check": calibration_check(model.stats, model.fired)
            if model.monitor
            else None,
        }
        for bundle, model in zip(args.bundle, models)
    ]
    for report, model in zip(reports[1:], models[1:]):  # the same episodes: paired across models
        report["versus_first"] = versus(models[0].stats, model.stats, args.resamples, args.seed)
    return reports


def run(args: argparse.Namespace) -> int:
    from tcc_model.cli import print_written
    from tcc_model.errors import ConfigError

    if args.out is not None and args.out.exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} exists; pass --overwrite or choose another --out")
    start = time.perf_counter()
    reports = measure(args)
    for report in reports:
        report["seconds"] = round(time.perf_counter() - start, 1)
        print(f"\n### Robustness: {report['bundle']} on {args.sets}\n")
        print(markdown(report))
    for report in reports[1:]:
        print(f"\n### {report['bundle']} minus {reports[0]['bundle']} (same episodes)\n")
        print(markdown_versus(report["versus_first"], report["episodes"]))
    for report in reports:
        if report["calibration_check"]:
            print(calibration_line(report))
    print(
        "Shifted rows: value (paired difference to the control ± bootstrap SE over "
        f"{args.resamples} resamples of the episodes). Episodes simulated from another attempt "
        f"than the control's after a failed label check (not exact pairs): "
        f"{reports[0]['unpaired_episodes']}."
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=1) + "\n")
        print_written({"report": args.out})
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from tcc_model.sim.ranges import SHIFT_FACTORS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="render the control and the shifted sets")
    g.add_argument("--out", type=Path, required=True, help="folder of the sets")
    g.add_argument("--episodes", type=int, default=20)
    g.add_argument("--seed", type=int, default=1000, help="not a training seed")
    g.add_argument("--size", type=int, default=112)
    g.add_argument("--shift-size", type=float, default=1.0)
    g.add_argument("--station", type=int, default=20_190_415)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument(
        "--factors", nargs="+", default=[*SHIFT_FACTORS, "all"], choices=[*SHIFT_FACTORS, "all"]
    )
    r = sub.add_parser("run", help="print the table for a bundle")
    r.add_argument("--bundle", type=Path, nargs="+", required=True, help="one table per bundle")
    r.add_argument("--train-dataset", required=True, help="the model's training dataset")
    r.add_argument("--sets", type=Path, required=True, help="folder written by generate")
    r.add_argument("--split", default="test", help="split of the sets (generate writes test)")
    r.add_argument("--calib-split", default="val", help="calibration split of --train-dataset")
    r.add_argument("--references", type=int, default=20)
    r.add_argument("--false-alarm-rate", type=float, default=0.01)
    r.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    r.add_argument("--no-stream", action="store_true", help="offline protocols only")
    r.add_argument(
        "--monitor",
        choices=("auto", "bundle", "fit"),
        default="auto",
        help="bundle: the bundle's references and calibration (as on the robot); fit: references "
        "from --train-dataset train, calibrated on --calib-split; auto: bundle where present",
    )
    r.add_argument(
        "--train-videos", type=int, default=None, help="at most this many training videos"
    )
    r.add_argument("--backend", default="auto")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", type=Path, default=None, help="JSON report")
    r.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return generate(args) if args.command == "generate" else run(args)


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
