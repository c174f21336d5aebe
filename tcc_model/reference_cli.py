"""The ``python -m tcc_model.reference`` command: parse, check, build, calibrate, report.

The library it drives (embedding, reference building, calibration) is :mod:`tcc_model.reference`;
see its docstring for what the command does. :func:`main` here is ``tcc_model.reference.main``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.cli import add_bundle_arg, check_bundle, print_written, run_main, stage
from tcc_model.errors import ConfigError
from tcc_model.reference import (
    build_references,
    calibrate_references,
    embed_episode,
    load_episodes,
    normal_episodes,
    split_references,
)
from tcc_model.shift_check import CONTROL, check_line, check_sets
from tcc_model.stream import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_PHASE_LAGS,
    MonitorConfig,
)


def _parser() -> argparse.ArgumentParser:
    """The command's options, in the order ``--help`` lists them."""
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.reference",
        description="Embed reference demonstrations into a bundle; calibrate anomaly thresholds.",
    )
    add_bundle_arg(p)
    _add_reference_args(p)
    _add_calibration_args(p)
    _add_run_args(p)
    return p


def _add_reference_args(p: argparse.ArgumentParser) -> None:
    """The demonstrations: dataset, split, how many references and classifier videos, lags."""
    p.add_argument("--dataset", required=True, help="dataset name (e.g. sim_pouring) or folder")
    p.add_argument("--split", default="train", help="split holding the demonstrations")
    p.add_argument("--max-videos", type=int, default=20, help="at most this many references")
    p.add_argument(
        "--classifier-videos",
        type=int,
        default=None,
        help="fit the phase classifier on up to this many labelled normal videos of --split, the "
        "references included (default: all of them)",
    )
    p.add_argument(
        "--phase-lags",
        type=int,
        nargs="*",
        default=list(DEFAULT_PHASE_LAGS),
        help="frames back of the embedding differences the phase classifier sees (none: the "
        "embedding alone)",
    )


def _add_calibration_args(p: argparse.ArgumentParser) -> None:
    """The calibration: its episodes, the false-alarm rate and the method."""
    p.add_argument(
        "--calib-dataset",
        default=None,
        help="dataset of the normal calibration episodes (default: --dataset); the simulator "
        "renders as many as a false-alarm rate needs",
    )
    p.add_argument("--calib-split", default="val", help="held-out split for calibration")
    p.add_argument(
        "--calib-episodes",
        "--max-calib-videos",
        dest="calib_episodes",
        type=int,
        default=None,
        help="calibrate on at most this many normal episodes (default: all of the split)",
    )
    p.add_argument("--false-alarm-rate", type=float, default=0.01, help="per nominal episode")
    p.add_argument(
        "--check-sets",
        type=Path,
        default=None,
        help="folder of datasets with one factor of the cell shifted each (e.g. "
        "`benchmarks/bench_robustness.py generate`: control, objects, lighting, ...): replay the "
        "calibrated monitor on their normal --check-split episodes and record the false alarms "
        "per set in the calibration (shift_check)",
    )
    p.add_argument("--check-split", default="test", help="split of the --check-sets datasets")
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default=DEFAULT_CALIBRATION_METHOD,
        help="tail (default): per detector, a generalized Pareto tail of its normal maxima at "
        "rate / detectors, then the conformal count guard; fused: one conformal threshold on the "
        "largest normalised detector statistic; bonferroni: one conformal threshold per detector "
        "at rate / detectors",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The engine backend and threads, the rest phases and manifest registration."""
    p.add_argument("--backend", default="auto", help="engine backend (auto, onnxruntime, torch…)")
    p.add_argument("--threads", type=int, default=1, help="CPU inference threads")
    p.add_argument(
        "--rest-phases",
        nargs="*",
        default=[],
        help="phases in which standing still is normal (stored in the calibration; the monitor "
        "does not report a stall there)",
    )
    p.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="do not list the reference files (with sha256) in the bundle manifest",
    )


def _check_args(args: argparse.Namespace) -> None:
    """Raise ConfigError for values no run could use (before anything is loaded)."""
    checks = (
        ("--max-videos", args.max_videos, args.max_videos is not None and args.max_videos < 1),
        ("--false-alarm-rate", args.false_alarm_rate, not 0 < args.false_alarm_rate < 1),
        ("--phase-lags", args.phase_lags, any(lag < 1 for lag in args.phase_lags)),
        (
            "--classifier-videos",
            args.classifier_videos,
            args.classifier_videos is not None and args.classifier_videos < 0,
        ),
        (
            "--calib-episodes",
            args.calib_episodes,
            args.calib_episodes is not None and args.calib_episodes < 1,
        ),
    )
    ranges = {"--false-alarm-rate": "in (0, 1)", "--phase-lags": ">= 1 frames"}
    for option, value, failed in checks:
        if failed:
            expected = ranges.get(option, ">= 0" if option == "--classifier-videos" else ">= 1")
            raise ConfigError(f"{option} must be {expected}, got {value}")
    if args.check_sets is not None:
        _check_sets(args.check_sets)  # a wrong folder fails before any embedding


def run(argv: Sequence[str] | None = None) -> int:
    """The command; user errors are raised (see :func:`main`)."""
    args = _parser().parse_args(argv)
    _check_args(args)
    bundle = check_bundle(args.bundle)
    from tcc_model.engine import load_bundle

    engine = load_bundle(bundle, backend=args.backend, threads=args.threads)
    config = MonitorConfig(rest_phases=tuple(args.rest_phases))
    labelled = normal_episodes(load_episodes(args.dataset, args.split))
    train, extra = split_references(labelled, args.max_videos, args.classifier_videos)
    print(
        f"embedding {len(train)} reference episodes of {args.dataset}/{args.split} "
        f"(+{len(extra)} more for the phase classifier)"
    )
    references = build_references(
        engine, train, log=print, classifier_episodes=extra, phase_lags=args.phase_lags
    )
    calib_dataset = args.calib_dataset or args.dataset
    split = load_episodes(calib_dataset, args.calib_split)
    calib = normal_episodes(split, args.calib_episodes)
    refused = sum(e.labels.anomaly is not None for e in split)
    print(
        f"calibrating on {len(calib)} normal episodes of {calib_dataset}/{args.calib_split}"
        + (f" ({refused} anomalous episodes of the split left out)" if refused else "")
    )
    rate, method = args.false_alarm_rate, args.calibration_method
    embedded = [embed_episode(engine, e) for e in calib]
    cal = calibrate_references(references, embedded, rate, config, method=method)
    npz_path, json_path = references.save(bundle)
    print(
        f"{references.num_references} references, {int(references.lengths.sum())} frames, "
        f"D={references.dim}, bundle {engine.bundle_id}"
    )
    _print_calibration(cal)
    if args.check_sets is not None:  # adds the check to references.json: before registering
        _check_shifted_sets(args, bundle, engine, references)
    if args.register:
        from tcc_model.bundle import register_files

        register_files(bundle, [npz_path.name, json_path.name])
    print_written({"references": npz_path, "metadata": json_path})
    return 0


def _check_sets(folder: Path) -> list[Path]:
    """The datasets (folders with a manifest) under ``--check-sets``, control first."""
    if not folder.is_dir():
        raise ConfigError(
            f"--check-sets {folder}: no such folder; render shifted sets with "
            "`python benchmarks/bench_robustness.py generate --out DIR` or pass your own"
        )
    sets = sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file())
    if not sets:
        raise ConfigError(f"--check-sets {folder}: no dataset folder (with manifest.json) in it")
    return sorted(sets, key=lambda p: p.name != CONTROL)


def _check_shifted_sets(
    args: argparse.Namespace, bundle: Path, engine: Any, references: Any
) -> None:
    """Replay the bundle's calibrated monitor on shifted normal episodes; record the result."""
    from tcc_model.stream import ProgressMonitor, ReferenceSet, monitor_config

    sets = {}
    for folder in _check_sets(args.check_sets):
        with stage(f"embed the normal {args.check_split} episodes of {folder}"):
            episodes = normal_episodes(load_episodes(f"folder:{folder}", args.check_split))
            sets[folder.name] = [embed_episode(engine, e) for e in episodes]
    monitor = ProgressMonitor(ReferenceSet.load(bundle, engine.bundle_id), monitor_config(bundle))
    check = check_sets(monitor, sets)
    check["sets"], check["split"] = str(args.check_sets), args.check_split
    references.calibration["shift_check"] = check
    references.save(bundle)
    print(check_line(check))


def _print_calibration(cal: dict[str, Any]) -> None:
    """The calibration summary lines: rate, episodes, thresholds and each detector's state."""
    excluded = cal["num_excluded"]
    print(
        f"calibration ({cal['method']}): false-alarm rate {cal['false_alarm_rate']} per episode "
        f"needs >= {cal['episodes_needed']} normal episodes; used {cal['num_episodes']}"
        + (
            f" ({excluded} outlying excluded: {', '.join(cal['excluded_episodes'])})"
            if excluded
            else ""
        )
        + f", {cal['num_frames']} frames; achieved rate on them "
        f"{cal['achieved_false_alarm_rate']:.3f}; temperature {cal['temperature']:.4g}"
    )
    raised = cal.get("raised_by_guard") or {}
    for name, state in cal["detector_states"].items():
        what = f"threshold {state['threshold']:.4g} (normal max {state['normal_max']:.4g})"
        if name in raised:
            what += f", raised from the tail's {raised[name]:.4g} by the count guard"
        print(
            f"  {name}: {state['state']}, {what}"
            + (f": {state['reason']}" if state["reason"] else "")
        )
    accuracies = ", ".join(f"{k} {v:.1%}" for k, v in cal["phase_accuracy"].items())
    measured = f" (phase accuracy on the calibration episodes: {accuracies})" if accuracies else ""
    accuracy = cal["phase_accuracy"]
    if cal["phase_source"] == "alignment" and accuracy.get("classifier", 0.0) > accuracy.get(
        "alignment", 1.0
    ):
        measured += "; the classifier's gain is within one standard error over the episodes"
    print(f"phase source: {cal['phase_source']}{measured}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with one ``error:`` line on bad input)."""
    return run_main(run, argv)
