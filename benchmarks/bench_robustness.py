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
``--train-dataset``'s train split. Stream
columns: the monitor with references and phase classifier from the train split and calibration
on the normal ``--calib-split`` episodes, replayed on every episode (bench_stream's
``replay``). Each shifted row gives the value and the paired difference to the control with
its bootstrap standard error (:mod:`tcc_model.robustness`).
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

CONTROL = "control"
SET_ORDER = ("objects", "lighting", "motion", "distractors", "liquid", "camera", "all")
COLUMNS = (
    ("tau", "Kendall's τ", "{:.3f}", 1.0),
    ("cls10", "phase cls @10%", "{:.1f}%", 100.0),
    ("r2", "progression R²", "{:.3f}", 1.0),
    ("progress_mae", "stream progress MAE", "{:.3f}", 1.0),
    ("phase_acc", "stream phase", "{:.1f}%", 100.0),
    ("false_alarms", "false alarms / 100 normal", "{:.1f}", 1.0),
)


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

    def __init__(self, args: argparse.Namespace, engine: Any, train: list, embedded: list) -> None:
        from tcc_model import robustness as rb

        self.engine, self.train, self.stats = engine, embedded[0], {}
        phase_names = list(train[0].labels.phase_names)
        self.probes = rb.ProtocolProbes(
            [m.embeddings for m in embedded[0]],
            [m.phase_ids for m in embedded[0]],
            len(phase_names),
        )
        self.calibration: dict[str, Any] = {}
        self.monitor = None
        if not args.no_stream:
            from tcc_model.reference import calibrate_references
            from tcc_model.stream import MonitorConfig, ProgressMonitor

            references = _references(engine, train, embedded[0], args.references)
            config = MonitorConfig()
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
            rb.add_stream_records(stats, replay(self.monitor, embedded))
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
    names = _set_names(args.sets)
    with stage(f"embed {args.train_dataset} train and {args.calib_split}"):
        train = normal_episodes(load_episodes(args.train_dataset, "train"))
        train_emb = _embed(engines, train)
        calib_emb = _embed(
            engines, normal_episodes(load_episodes(args.train_dataset, args.calib_split))
        )
    models = [_Model(args, e, train, (t, c)) for e, t, c in zip(engines, train_emb, calib_emb)]
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
    return [
        {
            "bundle": str(bundle),
            "train_dataset": args.train_dataset,
            "sets": str(args.sets),
            "episodes": episodes,
            "unpaired_episodes": unpaired,
            "train_videos": len(train),
            "calibration": {
                "episodes": model.calibration.get("num_episodes"),
                "false_alarm_rate": args.false_alarm_rate,
                "phase_source": model.calibration.get("phase_source"),
                "episodes_needed": model.calibration.get("episodes_needed"),
            },
            "resamples": args.resamples,
            "rows": model.rows(args),
        }
        for bundle, model in zip(args.bundle, models)
    ]


def markdown(report: dict[str, Any]) -> str:
    """The table: control values, then each shift's value and paired difference ± SE."""
    cols = [c for c in COLUMNS if c[0] in report["rows"][CONTROL]]
    lines = [
        "| test episodes | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, row in report["rows"].items():
        cells = []
        for key, _, fmt, scale in cols:
            cell = row[key]
            text = fmt.format(scale * cell["value"])
            if "diff" in cell:
                sign = "+" if cell["diff"] >= 0 else "−"
                diff = fmt.format(scale * abs(cell["diff"])).rstrip("%")
                se = fmt.format(scale * cell["se"]).rstrip("%")
                text += f" ({sign}{diff} ± {se})"
            cells.append(text)
        label = f"{name} ({report['episodes'][name]})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
