"""A whole dataset: rendering processes, the staging folder, the manifest, the atomic rename.

Everything is written to ``DIR.tmp-XXXX`` next to ``DIR``, and that folder is renamed to ``DIR``
only once the manifest is written; a failed or interrupted run removes it. Episodes are pure
functions of their plan, so the output is identical for any number of workers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tcc_model.data.format import (
    ANOMALY_TYPES,
    SPLITS,
    EpisodeLabels,
    write_episode,
    write_manifest,
)
from tcc_model.data.registry import SIM_GENERATOR_VERSION
from tcc_model.data.sim_pouring.episode import (
    STATION_SEED,
    RenderSettings,
    _check_render_settings,
    render_episode,
)
from tcc_model.data.sim_pouring.plan import (
    DATASET_NAME,
    DEFAULT_SPLIT_FRACTIONS,
    EpisodePlan,
    plan_dataset,
)

_WORKER_ENV = {"LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _init_worker() -> None:
    """Worker process setup: one llvmpipe/BLAS thread each, headless EGL rendering.

    The sampling settings are not fixed here: every job carries its :class:`RenderSettings`.
    """
    os.environ.update(_WORKER_ENV)
    os.environ.setdefault("MUJOCO_GL", "egl")


def _generate_one(plan: EpisodePlan, root: Path, settings: RenderSettings) -> dict[str, Any]:
    """Render, encode and write one planned episode; returns its summary for the manifest."""
    frames, labels = render_episode(plan.seed, plan.anomaly, settings=settings)
    names = {f.name for f in fields(EpisodeLabels)}
    write_episode(
        root / plan.split, plan.name, frames, EpisodeLabels(**{k: labels[k] for k in names})
    )
    return {
        "name": plan.name,
        "split": plan.split,
        "num_frames": len(frames),
        "anomaly": plan.anomaly,
        "clamped": bool(labels["metadata"]["motion"]["clamped"]),
        "attempt": int(labels["metadata"]["attempt"]),
    }


def _make_staging_dir(out: Path) -> Path:
    """Check ``out`` (absent or an empty folder) and create ``out.tmp-XXXX`` beside it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"output folder {out} already exists and is not empty; choose a new --out or delete it"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise ValueError(
            f"cannot write the output folder {out} ({exc.strerror or exc}); choose a writable --out"
        ) from exc


def _chmod_like_mkdir(folder: Path) -> None:
    """Give a ``mkdtemp`` folder (mode 0700) the mode a plain ``mkdir`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _manifest(
    plans: Sequence[EpisodePlan],
    summaries: Sequence[dict[str, Any]],
    settings: RenderSettings,
    seed: int,
    anomaly_rate: float,
    split_fractions: Sequence[float],
) -> dict[str, Any]:
    from tcc_model.sim import FINE_PHASES, KEY_EVENTS, POURING_PHASES, RenderQuality

    quality = RenderQuality()
    try:
        mujoco_version = version("mujoco")
    except PackageNotFoundError:  # pragma: no cover - mujoco is a requirement
        mujoco_version = "unknown"
    anomalies = {
        split: {
            kind: sum(p.split == split and p.anomaly == kind for p in plans)
            for kind in ANOMALY_TYPES
        }
        for split in SPLITS
    }
    return {
        "name": DATASET_NAME,
        "phase_names": list(POURING_PHASES),
        "key_events": list(KEY_EVENTS),
        "fine_phase_names": list(FINE_PHASES),
        "splits": {split: sum(p.split == split for p in plans) for split in SPLITS},
        "anomalies": anomalies,
        "num_frames": int(sum(s["num_frames"] for s in summaries)),
        "generator": {
            "module": "tcc_model.data.sim_pouring",
            "version": SIM_GENERATOR_VERSION,
            "episodes": len(plans),
            "seed": int(seed),
            "size": settings.size,
            "fps": settings.fps,
            "min_frames": settings.min_frames,
            "max_frames": settings.max_frames,
            "time_scaled_episodes": int(sum(s["clamped"] for s in summaries)),
            "resimulated_episodes": int(sum(s["attempt"] > 0 for s in summaries)),
            "variation": settings.variation,
            "station": settings.station if settings.variation == "station" else None,
            "ranges": _ranges(settings).to_dict(),
            "shift": settings.shift,
            "anomaly_rate": float(anomaly_rate),
            "split_fractions": [float(f) for f in split_fractions],
            "mujoco": mujoco_version,
            "render": {"shadow_size": quality.shadow_size, "msaa_samples": quality.msaa_samples},
        },
    }


def _ranges(settings: RenderSettings) -> Any:
    from tcc_model.sim.ranges import SamplingRanges

    return settings.ranges or SamplingRanges()


#: times a crashed pool of rendering processes is restarted before generation gives up
MAX_POOL_RESTARTS = 3


def _run_jobs(
    plans: Sequence[EpisodePlan],
    staging: Path,
    settings: RenderSettings,
    workers: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Generate every planned episode in ``workers`` spawned processes, with a progress bar.

    A rendering process that dies (a segfault in the GL stack) breaks the whole pool: the pool is
    restarted for the episodes not written yet, up to :data:`MAX_POOL_RESTARTS` times. Episodes
    are pure functions of their plan, so a re-rendered episode is identical.
    """
    from tqdm import tqdm

    summaries: dict[str, dict[str, Any]] = {}
    context = get_context("spawn")
    restarts = 0
    with tqdm(total=len(plans), unit="ep", disable=not progress, desc=DATASET_NAME) as bar:
        while len(summaries) < len(plans):
            remaining = [p for p in plans if p.name not in summaries]
            try:
                with ProcessPoolExecutor(
                    workers, mp_context=context, initializer=_init_worker
                ) as pool:
                    pending = {pool.submit(_generate_one, p, staging, settings) for p in remaining}
                    try:
                        while pending:
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for future in done:
                                summary = future.result()  # re-raises a worker's error
                                summaries[summary["name"]] = summary
                                bar.update(1)
                                bar.set_postfix(
                                    frames=sum(s["num_frames"] for s in summaries.values())
                                )
                    except BaseException:
                        for future in pending:
                            future.cancel()
                        raise
            except BrokenProcessPool as exc:
                restarts += 1
                if restarts > MAX_POOL_RESTARTS:
                    raise RuntimeError(
                        f"rendering processes crashed {restarts} times; check the GL setup "
                        "(MUJOCO_GL=egl needs EGL/Mesa) or run with --workers 1"
                    ) from exc
                print(
                    f"warning: a rendering process died ({exc}); restarting the pool for "
                    f"{len(plans) - len(summaries)} remaining episodes",
                    file=sys.stderr,
                    flush=True,
                )
    return sorted(summaries.values(), key=lambda s: s["name"])


def generate_dataset(
    out_dir: str | os.PathLike,
    episodes: int,
    size: int = 112,
    anomaly_rate: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    fps: float = 12.0,
    progress: bool = True,
    *,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    min_frames: int | None = None,
    max_frames: int | None = None,
    variation: str = "full",
    station: int = STATION_SEED,
    ranges: Any = None,
    shift: dict[str, Any] | None = None,
) -> Path:
    """Generate ``episodes`` episodes into ``out_dir`` (absent or empty) and return its path.

    Rendering runs in ``workers`` spawned processes; output is identical for any ``workers``.
    ``ranges`` (a ``SamplingRanges``) bounds the per-episode draws; ``shift`` only records
    which shift produced them. Bad arguments, a non-empty or unwritable ``out_dir`` raise
    ``ValueError``.
    """
    settings = RenderSettings(
        int(size), float(fps), min_frames, max_frames, variation, int(station), ranges, shift
    )
    _check_render_settings(settings)
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    plans = plan_dataset(episodes, anomaly_rate, seed, split_fractions)
    out = Path(out_dir)
    staging = _make_staging_dir(out)
    try:
        for split in {plan.split for plan in plans}:  # no folder for an empty split
            (staging / split).mkdir()
        summaries = _run_jobs(plans, staging, settings, min(int(workers), len(plans)), progress)
        write_manifest(
            staging, _manifest(plans, summaries, settings, seed, anomaly_rate, split_fractions)
        )
        _chmod_like_mkdir(staging)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
