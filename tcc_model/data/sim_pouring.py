"""Generate the synthetic robot-pouring dataset with the MuJoCo simulator (:mod:`tcc_model.sim`).

CLI::

    python -m tcc_model.data.sim_pouring --out DIR --episodes N [--size 112] [--anomaly-rate R]
        [--seed S] [--workers W] [--fps 12] [--split-fractions 0.7,0.15,0.15]
        [--variation full|station] [--station SEED] [--ranges FILE] [--widen SIZE]
        [--shift FACTOR[,FACTOR...]|all] [--shift-size 1.0] [--min-frames N] [--max-frames N]

writes the dataset format of ``docs/ARCHITECTURE.md``: ``train/ val/ test/`` with one mp4 and one
label JSON per episode, and ``manifest.json``.

Determinism: the split of every episode, whether it is anomalous (and how), and its simulation seed
are all derived from ``--seed`` alone, so the same arguments give byte-identical files whatever
``--workers`` is.

Splits and anomalies: episodes are shuffled into the splits by ``--split-fractions`` (largest
remainder rounding). Within every split, ``round(rate * n_split)`` episodes are anomalous, the four
anomaly types in equal shares; in ``train`` at least one episode stays normal
(unless the rate is 1).
Training code keeps the normal ones (``labels.anomaly is None``). Every normal episode passes every
key event in order, with no spilled liquid. Every anomalous episode has a non-empty
``anomaly_mask``. An episode that fails these checks is simulated again from a derived seed
(``metadata.attempt``).

Sampling ranges (:mod:`tcc_model.sim.ranges`): ``--ranges FILE`` (JSON or YAML, a partial
nested mapping factor -> range -> value) replaces defaults, ``--widen S`` extends every range
(domain randomisation), ``--shift F --shift-size S`` moves factor ``F`` outside its range. The
ranges used, the station and the shift are recorded in the manifest. A shifted dataset with the
same ``--seed`` and ``--episodes`` is *paired* with the unshifted one: episode ``i`` is the same
scene and motion with only the shifted factor changed (unless one of them needed a re-simulation,
``metadata.attempt``).

Episode length: ``round(duration x fps)`` frames, so the video shows the simulated speed.
``--min-frames`` / ``--max-frames`` clamp it by stretching or compressing time instead; every
episode records ``metadata.motion.time_scale`` and the manifest counts the clamped ones.

Atomicity: everything is written to ``DIR.tmp-XXXX`` next to ``DIR``, and that folder is renamed to
``DIR`` only once the manifest is written. A failed or interrupted run removes it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcc_model.data.format import (
    ANOMALY_TYPES,
    SPLITS,
    EpisodeLabels,
    write_episode,
    write_manifest,
)

if TYPE_CHECKING:
    from tcc_model.sim import EpisodeResult

DATASET_NAME = "sim_pouring"
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
#: simulation attempts per episode before giving up (a failed check re-simulates)
MAX_ATTEMPTS = 10
STATION_SEED = 20_190_415  # = tcc_model.sim.scene.STATION_SEED (not imported: MuJoCo)
_PLAN_STREAM = 0x5EED  # keeps the split/anomaly plan's random stream apart from episode seeds
_WORKER_ENV = {"LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class EpisodePlan:
    """What to generate for one episode: its name, split, simulation seed and anomaly."""

    index: int
    name: str
    split: str
    seed: int
    anomaly: str | None


@dataclass(frozen=True)
class RenderSettings:
    """Per-episode rendering and sampling settings shared by every episode of a dataset.

    ``ranges`` is a :class:`tcc_model.sim.ranges.SamplingRanges` (None: the defaults); the
    settings travel with every job to the rendering processes.
    """

    size: int = 112
    fps: float = 12.0
    min_frames: int | None = None  # None: no clamp (the video shows the simulated speed)
    max_frames: int | None = None
    variation: str = "full"  # "full" domain randomisation or one fixed "station" camera/room
    station: int = STATION_SEED  # seed of the station's fixed room, robot and camera
    ranges: Any = None
    shift: dict[str, Any] | None = None  # {"factors": [...], "size": s}, recorded only


def episode_seed(seed: int, index: int) -> int:
    """Simulation seed of episode ``index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def split_counts(episodes: int, fractions: Sequence[float]) -> list[int]:
    """Episodes per split: ``episodes * fractions`` rounded by largest remainder (sums exactly)."""
    exact = np.asarray(fractions, dtype=np.float64) * episodes
    counts = np.floor(exact).astype(int)
    remainder = episodes - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return [int(c) for c in counts]


def plan_dataset(
    episodes: int,
    anomaly_rate: float = 0.0,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> list[EpisodePlan]:
    """Deterministic plan (split, anomaly, seed) of every episode, in episode order."""
    _check_dataset_args(episodes, anomaly_rate, split_fractions)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    order = rng.permutation(episodes)
    split_of = np.empty(episodes, dtype=object)
    start = 0
    for split, count in zip(SPLITS, split_counts(episodes, split_fractions)):
        split_of[order[start : start + count]] = split
        start += count
    anomaly_of: list[str | None] = [None] * episodes
    for split in SPLITS:
        members = np.flatnonzero(split_of == split)
        count = round(anomaly_rate * len(members))
        if split == "train" and anomaly_rate < 1.0:
            count = min(count, max(len(members) - 1, 0))  # keep a normal episode to train on
        chosen = np.sort(rng.choice(members, size=count, replace=False))
        kinds = rng.permutation(np.resize(np.arange(len(ANOMALY_TYPES)), count))
        for index, kind in zip(chosen, kinds):
            anomaly_of[int(index)] = ANOMALY_TYPES[int(kind)]
    width = max(5, len(str(episodes - 1)))
    return [
        EpisodePlan(i, f"ep{i:0{width}d}", str(split_of[i]), episode_seed(seed, i), anomaly_of[i])
        for i in range(episodes)
    ]


def _check_dataset_args(
    episodes: int, anomaly_rate: float, split_fractions: Sequence[float]
) -> None:
    if int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly_rate must be in [0, 1], got {anomaly_rate}")
    fractions = list(split_fractions)
    if len(fractions) != len(SPLITS) or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(
            f"split_fractions must be {len(SPLITS)} numbers in [0, 1] for {'/'.join(SPLITS)}, "
            f"got {fractions}"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {fractions} (sum {sum(fractions)})")


def _check_render_settings(settings: RenderSettings) -> None:
    if settings.size < 16 or settings.size % 2:
        raise ValueError(f"size must be an even number >= 16 (H.264), got {settings.size}")
    if not settings.fps > 0:
        raise ValueError(f"fps must be positive, got {settings.fps}")
    low, high = settings.min_frames or 1, settings.max_frames or 1_000_000
    if not 1 <= low <= high:
        raise ValueError(
            f"need 1 <= min_frames <= max_frames, got {settings.min_frames}, {settings.max_frames}"
        )
    if settings.variation not in ("full", "station"):
        raise ValueError(f"variation must be 'full' or 'station', got {settings.variation!r}")


# ----------------------------------------------------------------------------- one episode


def _episode_problem(result: EpisodeResult) -> str | None:
    """Why a simulated episode cannot be used as labelled, or ``None`` when it can."""
    from tcc_model.sim import KEY_EVENTS

    if result.anomaly is None:
        if list(result.key_events) != list(KEY_EVENTS):
            return f"missing key events: {sorted(set(KEY_EVENTS) - set(result.key_events))}"
        if result.key_events[KEY_EVENTS[0]] == 0:
            return "hand touches the bottle in the first frame"
        if result.spill.any() or result.dropped:
            return "liquid spilled in a normal episode"
        return None
    if not result.anomaly_mask.any():
        return f"{result.anomaly} anomaly left no anomalous frame"
    if result.anomaly in ("stall", "reversed") and result.spill.any():
        return f"liquid spilled in a {result.anomaly} episode"
    return None


def simulate_episode(
    seed: int, anomaly: str | None, settings: RenderSettings = RenderSettings()
) -> tuple[EpisodeResult, int]:
    """Simulate and render the episode of ``seed``; returns the result and the attempt used.

    Attempt 0 simulates ``seed`` itself; an episode that fails the label checks (see the module
    docstring) is simulated again from ``[seed, attempt]``. Only the accepted attempt is rendered.
    """
    from tcc_model.sim import ANOMALY_TYPES as SIM_ANOMALIES
    from tcc_model.sim import PouringEpisode

    if anomaly is not None and anomaly not in SIM_ANOMALIES:
        raise ValueError(f"anomaly must be None or one of {SIM_ANOMALIES}, got {anomaly!r}")
    _check_render_settings(settings)
    problem = None
    for attempt in range(MAX_ATTEMPTS):
        rng_seed = seed if attempt == 0 else [seed, attempt]
        args = (anomaly, settings.size, settings.fps, settings.min_frames, settings.max_frames)
        kwargs = {
            "variation": settings.variation,
            "ranges": settings.ranges,
            "station": settings.station,
        }
        # check the labels on a simulation without rendering, then render the accepted attempt
        problem = _episode_problem(
            PouringEpisode(np.random.default_rng(rng_seed), *args, **kwargs).run(render=False)
        )
        if problem is None:
            return PouringEpisode(np.random.default_rng(rng_seed), *args, **kwargs).run(), attempt
    raise RuntimeError(
        f"episode seed {seed} ({anomaly or 'normal'}): no valid simulation in {MAX_ATTEMPTS} "
        f"attempts (last: {problem}); try other min_frames/max_frames"
    )


def episode_labels(result: EpisodeResult, seed: int, attempt: int, fps: float) -> dict[str, Any]:
    """Label dict in the ``EpisodeLabels`` JSON shape (``video`` left empty)."""
    from tcc_model.sim import FINE_PHASES, POURING_PHASES

    anomalous = result.anomaly is not None
    return {
        "format_version": 1,
        "video": "",
        "fps": float(fps),
        "num_frames": int(result.num_frames),
        "phase_names": list(POURING_PHASES),
        "phase_ids": result.phase.astype(int).tolist(),
        "key_events": dict(result.key_events),
        "anomaly": result.anomaly,
        "anomaly_mask": result.anomaly_mask.astype(int).tolist() if anomalous else None,
        "metadata": {
            "generator": DATASET_NAME,
            "seed": int(seed),
            "attempt": int(attempt),
            "fine_phase_names": list(FINE_PHASES),
            "fine_phase_ids": result.fine_phase.astype(int).tolist(),
            "flow_mask": result.flow.astype(int).tolist(),
            "spill_mask": result.spill.astype(int).tolist(),
            "dropped": bool(result.dropped),
            "final_cup_fill": round(float(result.final_cup_fill), 6),
            "anomaly_info": result.script.anomaly_info,
            "motion": result.script.params,
            "scene": result.scene.to_dict(),
        },
    }


def render_episode(
    seed: int,
    anomaly: str | None,
    size: int = 112,
    *,
    fps: float = 12.0,
    min_frames: int | None = None,
    max_frames: int | None = None,
    variation: str = "full",
    settings: RenderSettings | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one episode: RGB uint8 frames ``[N, size, size, 3]`` and its label dict.

    ``anomaly`` is ``None`` or one of ``drop``, ``miss``, ``stall``, ``reversed``. The label dict
    has the ``EpisodeLabels`` JSON shape with an empty ``video``. ``min_frames``/``max_frames``
    clamp the episode length (simulated time is stretched or compressed to fit; recorded in
    ``metadata.motion.time_scale``). ``variation`` is ``"full"`` (everything randomised) or
    ``"station"`` (one fixed camera and room). ``settings``, when given, replaces all of these
    but ``anomaly`` and ``seed`` (and adds the sampling ranges and the station).
    """
    if settings is None:
        settings = RenderSettings(int(size), float(fps), min_frames, max_frames, variation)
    result, attempt = simulate_episode(int(seed), anomaly, settings)
    return result.frames, episode_labels(result, int(seed), attempt, settings.fps)


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


# ----------------------------------------------------------------------------- dataset


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


# ----------------------------------------------------------------------------- CLI


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(
            f"expected three comma-separated numbers (train,val,test), got {text!r}"
        )
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tcc_model.data.sim_pouring",
        description="Generate the synthetic MuJoCo robot-pouring dataset (mp4 + JSON labels).",
    )
    parser.add_argument("--out", required=True, type=Path, help="new dataset folder")
    parser.add_argument("--episodes", required=True, type=int, help="number of episodes")
    parser.add_argument("--size", type=int, default=112, help="frame size in pixels (even)")
    parser.add_argument(
        "--anomaly-rate", type=float, default=0.0, help="share of anomalous episodes per split"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="global seed (output is a function of it)"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--fps", type=float, default=12.0, help="video frame rate")
    parser.add_argument(
        "--split-fractions",
        type=_fractions,
        default=DEFAULT_SPLIT_FRACTIONS,
        help="train,val,test fractions (default 0.7,0.15,0.15)",
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=None,
        help="clamp shorter episodes to N frames by slowing time (default: no clamp; recorded "
        "per episode as metadata.motion.time_scale)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="clamp longer episodes to N frames by speeding time up (default: no clamp)",
    )
    parser.add_argument(
        "--variation",
        choices=["full", "station"],
        default="full",
        help="full: randomise camera, room and robot per episode; station: one fixed camera "
        "and room (a robot cell), objects, layout and lighting still vary",
    )
    parser.add_argument(
        "--station",
        type=int,
        default=STATION_SEED,
        help=f"seed of the station's room, robot and camera (--variation station; default "
        f"{STATION_SEED})",
    )
    parser.add_argument(
        "--ranges",
        type=Path,
        default=None,
        help="JSON/YAML file of sampling ranges replacing the defaults (see tcc_model.sim.ranges)",
    )
    parser.add_argument(
        "--widen",
        type=float,
        default=0.0,
        help="extend every sampling range by SIZE x its width / 2 on both sides (0: off)",
    )
    parser.add_argument(
        "--shift",
        default=None,
        help="move these factors' ranges outside the defaults: comma-separated of "
        "objects, lighting, motion, distractors, liquid, camera, or all",
    )
    parser.add_argument(
        "--shift-size", type=float, default=1.0, help="how far --shift moves (1: about one width)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def sampling_ranges(
    ranges_file: Path | None = None,
    widen: float = 0.0,
    shift: str | None = None,
    shift_size: float = 1.0,
) -> tuple[Any, dict[str, Any] | None]:
    """The ``SamplingRanges`` of the CLI options and the shift record for the manifest."""
    from tcc_model.errors import ConfigError, wrap_errors
    from tcc_model.sim.ranges import SHIFT_FACTORS, SamplingRanges, shifted, widened

    ranges = SamplingRanges()
    if ranges_file is not None:
        import yaml

        fix = "pass a JSON or YAML mapping of ranges"
        with wrap_errors(ConfigError, ranges_file, fix, extra=(yaml.YAMLError,)):
            data = yaml.safe_load(Path(ranges_file).read_text())
        ranges = SamplingRanges.from_dict(data or {}, source=str(ranges_file))
    if widen < 0:
        raise ConfigError(f"--widen must be >= 0, got {widen}")
    if widen > 0:
        ranges = widened(widen, ranges)
    if not shift:
        return ranges, None
    factors = [f.strip() for f in shift.split(",") if f.strip()]
    factors = list(SHIFT_FACTORS) if factors == ["all"] else factors
    for name in factors:
        if name not in SHIFT_FACTORS:
            raise ConfigError(
                f"--shift {name!r}: unknown factor; expected all or some of "
                f"{', '.join(SHIFT_FACTORS)}"
            )
    return shifted(factors, shift_size, ranges), {"factors": factors, "size": float(shift_size)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad arguments or an unwritable --out)."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    ranges, shift = sampling_ranges(args.ranges, args.widen, args.shift, args.shift_size)
    try:
        out = generate_dataset(
            args.out,
            args.episodes,
            size=args.size,
            anomaly_rate=args.anomaly_rate,
            seed=args.seed,
            workers=args.workers,
            fps=args.fps,
            progress=not args.no_progress,
            split_fractions=args.split_fractions,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
            variation=args.variation,
            station=args.station,
            ranges=ranges,
            shift=shift,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: generation failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    from tcc_model.data.format import read_manifest

    generator = read_manifest(out)
    frames = generator["num_frames"]
    scaled = generator["generator"]["time_scaled_episodes"]
    if scaled:
        print(
            f"note: {scaled} of {args.episodes} episodes were clamped to "
            f"--min-frames/--max-frames: their video speed differs from the simulated speed "
            "(metadata.motion.time_scale)",
            file=sys.stderr,
        )
    print(
        f"wrote {args.episodes} episodes ({frames} frames) to {out} in {seconds:.1f} s "
        f"({frames / seconds:.1f} frames/s)"
    )
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
