"""Copy a trained bundle into ``models/`` with a model card (``make ship-model``).

    python models/ship_model.py --bundle runs/sim_eval/bundle --out models/sim_pouring \\
        [--eval val=VAL_EVAL_DIR] [--eval test=TEST_EVAL_DIR] ...

Copies the files ``bundle.yaml`` lists (sha256-verified; nothing else, so no checkpoints or
caches) and writes ``model_card.json`` + ``MODEL_CARD.md``: the training command, commit and
machine (``<run>/provenance.json``), the data generator's seed and settings, the calibration,
the metrics of the given evaluation folders (``metrics.json`` of ``python -m
tcc_model.evaluate``), and a fixed-input embedding check that ``test/test_shipped_model.py``
recomputes with the current code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO))

from tcc_model.errors import UserError  # noqa: E402
from tcc_model.reporting import fmt  # noqa: E402

#: the shipped folder must stay small enough for the repository
MAX_BYTES = 12 * 1024 * 1024
CARD_JSON, CARD_MD = "model_card.json", "MODEL_CARD.md"
HEADLINE = {
    "kendalls_tau": ("Kendall's tau", "{:.3f}"),
    "classification_10": ("phase classification, 10% of labels", "{:.1%}"),
    "classification_100": ("phase classification, 100% of labels", "{:.1%}"),
    "few_shot_1": ("few-shot, 1 labelled video", "{:.1%}"),
    "progression_r2": ("progression R²", "{:.3f}"),
}


def check_input(n: int = 8) -> Any:
    """A fixed, seed-free uint8 clip (smooth gradients that move) for the embedding check."""
    import numpy as np

    y, x = np.mgrid[0:112, 0:112].astype(np.float32) / 111.0
    frames = [
        np.stack([x * (1 - t / n), y, (x + y + t / n) % 1.0], axis=-1) * 255.0 for t in range(n)
    ]
    return np.stack(frames).round().astype(np.uint8)


def check_embeddings(bundle_dir: Path) -> Any:
    """Embeddings of :func:`check_input` by the bundle's ONNX Runtime graphs on the CPU."""
    from tcc_model.engine import load_bundle

    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu")
    return engine.embed_frames(check_input())


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as JSON ({err}); run its step again") from err


def _training_source(manifest: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the run that made the bundle and the generator of its training data."""
    training = manifest.get("training") or {}
    checkpoint = Path(str(training.get("checkpoint", "")))
    run_dir = checkpoint.parent.parent
    provenance = run_dir / "provenance.json"
    launches = _json(provenance)["launches"] if provenance.is_file() else []
    dataset = str(training.get("dataset", ""))
    generator = _manifest_generator(Path(dataset.removeprefix("folder:")))
    return {
        "run_dir": str(run_dir),
        "step": training.get("step"),
        "dataset": dataset,
        "data_generator": _generator_summary(generator),
        "launches": launches,
        "config": {k: training.get(k) for k in ("data", "algo", "train")},
    }


def _manifest_generator(folder: Path | None) -> dict[str, Any] | None:
    path = None if folder is None else folder / "manifest.json"
    return _json(path).get("generator") if path is not None and path.is_file() else None


def _generator_summary(generator: dict[str, Any] | None) -> dict[str, Any] | None:
    if not generator:
        return None
    keys = ("module", "episodes", "seed", "size", "fps", "variation", "anomaly_rate")
    return {k: generator.get(k) for k in (*keys, "split_fractions", "ranges")}


def build_card(
    src: Path,
    manifest: dict[str, Any],
    evals: dict[str, Path | None],
    calibration_data: Path | None = None,
    alerts: Path | None = None,
) -> dict:
    """The model card's data (see the module docstring)."""
    from tcc_model.stream.references import reference_metadata
    from tcc_model.train.provenance import cpu_model, git_state

    calibration = reference_metadata(src).get("calibration", {})
    metrics, sources = {}, {}
    for name, path in evals.items():
        if path is not None:
            report = _json(path / "metrics.json")
            metrics[name] = report.get("headline", {})
            config = report.get("config", {})
            sources[name] = {
                "folder": str(path),
                "dataset": config.get("eval_dataset") or config.get("dataset"),
                "split": (config.get("splits") or {}).get("val"),
                "checkpoint_step": config.get("checkpoint_step"),
            }
    files = manifest.get("files") or {}
    return {
        "bundle_id": manifest["bundle_id"],
        "format_version": manifest["format_version"],
        "source_bundle": str(src),
        "shipped_at": git_state(),
        "files": {name: entry.get("bytes") for name, entry in files.items()},
        "model": manifest.get("model"),
        "training": (training := _training_source(manifest)),
        "cpu": next((x["cpu"] for x in training["launches"] if x.get("cpu")), None)
        or f"{cpu_model()}, read when shipped",
        "versions": manifest.get("versions"),
        "calibration": {
            k: calibration.get(k)
            for k in (
                "method",
                "false_alarm_rate",
                "achieved_false_alarm_rate",
                "num_episodes",
                "raised_by_guard",
                "shift_check",
            )
        }
        | {"detectors": calibration.get("detector_states"), "data": str(calibration_data)}
        | {"data_generator": _generator_summary(_manifest_generator(calibration_data))},
        "metrics": metrics,
        "metric_sources": sources,
        "alerts": _alerts_summary(alerts),
        "check": {"input": "models/ship_model.py:check_input()", "embeddings": None},
    }


def _alerts_summary(path: Path | None) -> dict[str, Any] | None:
    """The ``shipped`` row of a ``benchmarks/bench_stream.py --out`` report (no episodes)."""
    if path is None:
        return None
    report = _json(path)
    row = (report.get("results") or {}).get("shipped")
    if row is None:
        raise UserError(
            f"--alerts {path}: no 'shipped' row; run bench_stream with --methods shipped"
        )
    keep = {k: v for k, v in row.items() if k not in ("records", "calibration_maxima")}
    return {"report": str(path), "source": report.get("source"), "shipped": keep}


def _alerts_lines(alerts: dict[str, Any] | None, calibration: dict[str, Any]) -> list[str]:
    """The card's alert section: per anomaly type, false alarms, and the shift check."""
    lines: list[str] = []
    if alerts:
        row = alerts["shipped"]
        kinds = [k for k, v in row.items() if isinstance(v, dict) and "auroc" in v]
        lines += [
            "",
            f"## Alerts (`benchmarks/bench_stream.py`, `{alerts['report']}`)",
            "",
            f"{alerts['source']}.",
            "",
            "| anomaly | AUROC | caught | median delay (frames) |",
            "|---|---|---|---|",
        ]
        for kind in kinds:
            r = row[kind]
            lines.append(
                f"| {kind} | {fmt(r.get('auroc'), '{:.3f}')} | {r['caught']} / {r['episodes']} | "
                f"{fmt(r.get('median_delay'), '{:g}')} |"
            )
        lines.append(
            f"\nFalse alarms: {fmt(row.get('false_alarms_per_100_normal'), '{:.1f}')} per 100 "
            f"normal episodes ({row.get('normal_episodes')} normal; "
            f"+{row.get('pre_onset_false_alarms')} raised before an onset); progress MAE "
            f"{fmt(row.get('progress_mae'), '{:.3f}')}, phase accuracy "
            f"{fmt(row.get('phase_accuracy'), '{:.1%}')}."
        )
    check = calibration.get("shift_check")
    if check:
        from tcc_model.shift_check import check_line

        lines += ["", f"Calibration checked against {check.get('sets')}: {check_line(check)}."]
    return lines


def card_markdown(card: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` from the card's data."""
    t = card["training"]
    launches = t["launches"] or [{}]
    first, last = launches[0], launches[-1]
    gen = t["data_generator"] or {}
    cfg = {k: v or {} for k, v in t["config"].items()}
    cal = card["calibration"]
    cal_gen = cal.get("data_generator") or {}
    lines = [
        f"# Shipped model: {card['model'].get('encoder')} encoder, "
        f"{card['model'].get('image_size')}², bundle {card['bundle_id'][:12]}",
        "",
        "Written by `make ship-model` (models/ship_model.py); do not edit by hand.",
        "",
        "## How it was made",
        "",
        f"- training command: `{first.get('command', 'not recorded')}`"
        + (f" ({len(launches) - 1} resumed launch(es) after it)" if len(launches) > 1 else ""),
        f"- code commit: {first.get('commit') or 'not recorded'}"
        + (" (with uncommitted changes)" if first.get("dirty") else ""),
        f"- machine: {first.get('machine', 'not recorded')} ({card['cpu']}), "
        f"{first.get('threads', '?')} thread(s), torch {first.get('torch', '?')} (last launch "
        f"{last.get('started_utc', '?')})",
        f"- steps: {t['step']}; dataset {t['dataset']}: {gen.get('episodes')} simulated "
        f"episodes, seed {gen.get('seed')}, variation {gen.get('variation')}, anomaly rate "
        f"{gen.get('anomaly_rate')}, splits {gen.get('split_fractions')}",
        f"- settings (bundle.yaml `training` has them all): data.augment "
        f"{cfg.get('data', {}).get('augment')}, loss {cfg.get('algo', {}).get('name')} "
        f"({cfg.get('algo', {}).get('loss_type')}), batch {cfg.get('train', {}).get('batch_size')}"
        f", lr {cfg.get('train', {}).get('lr')}, distinct frames "
        f"{cfg.get('train', {}).get('distinct_frames')}, stem {card['model'].get('stem')}",
        f"- calibration: {cal.get('method')} at a false-alarm rate of "
        f"{cal.get('false_alarm_rate')} per episode on {cal.get('num_episodes')} normal "
        f"episodes of {cal.get('data')} (seed {cal_gen.get('seed')}, "
        f"{cal_gen.get('episodes')} episodes, variation {cal_gen.get('variation')})",
        f"- shipped from {card['source_bundle']} at commit {card['shipped_at'].get('commit')}",
        *(
            [
                "- recalibrated (references, calibration and alerts redone with the code of that "
                "commit); the model files, how they were trained and their metrics are those "
                f"first shipped at commit {_first_commit(card)}"
            ]
            if card.get("recalibrated")
            else []
        ),
        "",
        "## Metrics (`python -m tcc_model.evaluate`, normal videos of each split)",
        "",
        "| metric | " + " | ".join(card["metrics"]) + " |",
        "|---|" + "---|" * len(card["metrics"]),
    ]
    for key, (name, pattern) in HEADLINE.items():
        values = [m.get(key) for m in card["metrics"].values()]
        cells = [pattern.format(v) if isinstance(v, (int, float)) else "n/a" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, source in card.get("metric_sources", {}).items():
        lines.append(
            f"\n{name}: `{source['folder']}` ({source['dataset']}, split {source['split']}, "
            f"checkpoint step {source['checkpoint_step']})"
        )
    lines += _alerts_lines(card.get("alerts"), cal)
    sizes = ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in card["files"].items() if b)
    lines += ["", f"Files: {sizes}.", ""]
    return "\n".join(lines)


def _first_commit(card: dict[str, Any]) -> str:
    """The commit a recalibrated model was first shipped at."""
    return str((card["recalibrated"].get("previous_shipped_at") or {}).get("commit"))


def ship(
    src: Path,
    out: Path,
    evals: dict[str, Path | None],
    command: str | None = None,
    calibration_data: Path | None = None,
    alerts: Path | None = None,
    previous_card: Path | None = None,
) -> dict[str, Any]:
    """Copy the bundle's listed files to ``out`` (replaced whole) and write the card.

    ``command``: the training command when the run recorded none (``provenance.json``).
    ``previous_card``: the ``model_card.json`` of the same model files shipped before (a
    recalibration): its training provenance and metrics are kept."""
    from tcc_model.bundle import MANIFEST_NAME, read_manifest
    from tcc_model.cli import check_bundle
    from tcc_model.utils import write_text_atomic

    manifest = read_manifest(check_bundle(src), verify=True)
    old = _json(previous_card) if previous_card is not None else None
    if old is not None and old.get("bundle_id") != manifest["bundle_id"]:
        raise UserError(
            f"--previous-card {previous_card}: describes bundle {str(old.get('bundle_id'))[:12]}, "
            f"not {manifest['bundle_id'][:12]} (other model files); ship a retrained model with "
            "its run's --eval folders instead"
        )
    names = [MANIFEST_NAME, *(manifest.get("files") or {})]
    total = sum((src / n).stat().st_size for n in names)
    if total > MAX_BYTES:
        raise UserError(f"{src}: {total / 1e6:.1f} MB, more than {MAX_BYTES / 1e6:.0f} MB")
    card = build_card(src, manifest, evals, calibration_data, alerts)
    if old is not None:  # the same model recalibrated: how it was trained and its metrics hold
        card.update({k: old[k] for k in ("training", "cpu", "metrics", "metric_sources")})
        card["recalibrated"] = {"previous_shipped_at": old.get("shipped_at")}
    if command and not card["training"]["launches"]:
        card["training"]["launches"] = [{"command": command, "note": "given to make ship-model"}]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        for name in names:
            shutil.copy2(src / name, staging / name)
        card["check"]["embeddings"] = check_embeddings(staging).round(6).tolist()
        write_text_atomic(staging / CARD_JSON, json.dumps(card, indent=1) + "\n")
        write_text_atomic(staging / CARD_MD, card_markdown(card))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Ship the bundle; returns the exit status."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder (with references)")
    p.add_argument("--out", type=Path, default=REPO / "models" / "sim_pouring")
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an evaluation to quote: a name (val, test, ...) and evaluate's --out folder",
    )
    p.add_argument(
        "--command", default=None, help="the training command, for a run without provenance.json"
    )
    p.add_argument(
        "--calibration-data", type=Path, default=None, help="the dataset references calibrated on"
    )
    p.add_argument(
        "--alerts", type=Path, default=None, help="a bench_stream --out report to quote (shipped)"
    )
    p.add_argument(
        "--previous-card",
        type=Path,
        default=None,
        help="model_card.json of the same model shipped before (recalibrated with the current "
        "code): keep its training provenance and metrics",
    )
    args = p.parse_args(argv)
    evals: dict[str, Path | None] = {}
    for item in args.eval:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--eval {item!r}: expected NAME=DIR, e.g. val=runs/sim_eval/eval")
        evals[name] = Path(folder)
    card = ship(
        args.bundle,
        args.out,
        evals,
        args.command,
        args.calibration_data,
        args.alerts,
        args.previous_card,
    )
    from tcc_model.cli import print_written

    size = sum(b or 0 for b in card["files"].values()) / 1e6
    print(f"shipped bundle {card['bundle_id'][:12]} ({size:.1f} MB of model files)")
    print_written({"bundle": args.out, "model card": args.out / CARD_MD})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
