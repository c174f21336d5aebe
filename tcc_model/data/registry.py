"""Dataset names for ``--dataset``: where each dataset lives and how it is obtained.

* ``sim_pouring``: the MuJoCo pouring simulator; generated on first use into a cache folder
  (``cache_dir``, else ``$TCC_CACHE_DIR``, else ``~/.cache/tcc_ros``) named
  ``sim_pouring-g<generator version>-station-<episodes>-<size>-<seed>``, then reused. The
  generator version (:data:`SIM_GENERATOR_VERSION`) is part of the name: data cached by an older
  simulator is never reused, since the same seed renders other episodes after a change.
* ``pouring``, ``penn_action`` (or ``penn_action/<action>``): real datasets converted to the dataset
  format under ``data_root`` (else ``$TCC_DATA_ROOT``) ``/<name>``.
* ``folder:PATH``: a user folder, either in the dataset format or holding plain videos / frame
  folders without labels (flat, or in ``train/ val/ test/`` sub-folders). Unlabelled episodes have
  ``labels.phase_ids = None``; a flat folder has no splits, so every split name returns all videos.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tcc_model.data.format import (
    IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    SPLITS,
    VIDEO_EXTENSIONS,
    DatasetError,
    Episode,
    EpisodeLabels,
    list_splits,
    load_split,
)

SIM_DATASET = "sim_pouring"
REAL_DATASETS = ("pouring", "penn_action")
FOLDER_PREFIX = "folder:"
DATASET_NAMES = (SIM_DATASET, *REAL_DATASETS, f"{FOLDER_PREFIX}PATH")
DEFAULT_SIM_EPISODES = 100
DEFAULT_SIM_SIZE = 112
# ``sim_pouring`` is one robot cell seen by a fixed camera (objects, layout and lighting vary);
# the fully randomised variant is generated with ``python -m tcc_model.data.sim_pouring
# --variation full`` and used as ``folder:PATH``.
SIM_VARIATION = "station"
#: Version of the simulated data: bump it whenever a change to the simulator (tcc_model/sim,
#: tcc_model/data/sim_pouring.py) changes the episodes a seed renders. The same seed reproduces a
#: dataset only with the same generator version (and MuJoCo version, recorded in the manifest).
#: 1: fixed literal ranges, 60-120-frame clamp; 2: sampling ranges as configuration
#: (tcc_model/sim/ranges.py), station recorded, episode length follows the simulated speed.
SIM_GENERATOR_VERSION = 2
DEFAULT_FRAME_FOLDER_FPS = 30.0

_REAL_DATASET_HELP = {
    "pouring": (
        "get the TCC Pouring TFRecords (pouring_train-*.tfrecord, pouring_val-*.tfrecord) from the "
        "official TCC release (google-research/google-research tcc/, bucket 'tcc-pouring') and "
        "convert them: python -m tcc_model.data.tfrecord --input 'pouring_train-*.tfrecord' "
        "--out {path} --split train (and again with pouring_val-* --split val)"
    ),
    "penn_action": (
        "get the Penn Action videos plus per-frame phase labels (the labels are not part of the "
        "TCC release; label files are published with CARL), write them as TFRecords or directly "
        "in the dataset format, one dataset per action under {path}/<action>; TFRecords convert "
        "with: python -m tcc_model.data.tfrecord --input '<action>_train-*.tfrecord' "
        "--out {path}/<action> --split train"
    ),
}


def default_cache_dir() -> Path:
    """``$TCC_CACHE_DIR`` if set, else ``~/.cache/tcc_ros``."""
    env = os.environ.get("TCC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tcc_ros"


def default_data_root() -> Path | None:
    """``$TCC_DATA_ROOT`` if set, else ``None``."""
    env = os.environ.get("TCC_DATA_ROOT")
    return Path(env).expanduser() if env else None


def _has_labelled_splits(path: Path) -> bool:
    return path.is_dir() and ((path / MANIFEST_NAME).is_file() or bool(list_splits(path)))


def sim_cache_name(episodes: int, size: int, seed: int, anomaly_rate: float | None = None) -> str:
    """Cache folder name of a generated simulator dataset (includes the generator version)."""
    name = f"{SIM_DATASET}-g{SIM_GENERATOR_VERSION}-{SIM_VARIATION}-{episodes}-{size}-{seed}"
    return name if anomaly_rate is None else f"{name}-a{anomaly_rate:g}"


def _resolve_sim(
    cache_dir: str | os.PathLike | None,
    episodes: int | None,
    size: int | None,
    seed: int,
    anomaly_rate: float | None,
    workers: int | None,
    progress: bool,
) -> Path:
    episodes = DEFAULT_SIM_EPISODES if episodes is None else int(episodes)
    size = DEFAULT_SIM_SIZE if size is None else int(size)
    if episodes < 2:
        raise DatasetError(f"sim_episodes must be >= 2, got {episodes}")
    if size < 16 or size % 2:
        raise DatasetError(f"sim_size must be an even number >= 16, got {size}")
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = base / sim_cache_name(episodes, size, seed, anomaly_rate)
    if (target / MANIFEST_NAME).is_file():
        return target
    from tcc_model.data.sim_pouring import generate_dataset  # heavy (MuJoCo): import on demand

    base.mkdir(parents=True, exist_ok=True)
    # Generate next to the target and rename when complete: an interrupted run leaves no
    # half-written dataset under the cache name, and concurrent runs do not clash.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=base))
    try:
        kwargs: dict = {
            "size": size,
            "seed": seed,
            "progress": progress,
            "variation": SIM_VARIATION,
        }
        if anomaly_rate is not None:
            kwargs["anomaly_rate"] = anomaly_rate
        if workers is not None:
            kwargs["workers"] = workers
        generate_dataset(tmp, episodes, **kwargs)
        if not (tmp / MANIFEST_NAME).is_file():
            raise DatasetError(f"{tmp}: the simulator finished without writing {MANIFEST_NAME}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST_NAME).is_file():  # not a concurrent writer: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _resolve_real(name: str, data_root: str | os.PathLike | None) -> Path:
    base_name = name.split("/", 1)[0]
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    path = (root / name) if root is not None else None
    if path is not None and _has_labelled_splits(path):
        return path
    if base_name == "penn_action" and path is not None and path.is_dir() and name == base_name:
        actions = sorted(d.name for d in path.iterdir() if _has_labelled_splits(d))
        if actions:
            raise DatasetError(
                f"{path} holds one dataset per action; use --dataset penn_action/<action> with "
                f"<action> one of {actions}"
            )
    where = str(path) if path is not None else f"<data root>/{name}"
    location = (
        f"expected it at {where} (data root from --data-root or $TCC_DATA_ROOT"
        + ("" if root is not None else ", neither is set")
        + ")"
    )
    how = _REAL_DATASET_HELP[base_name].format(path=where)
    raise DatasetError(
        f"dataset {name!r} not found: {location}; {how}; see docs/DATASET_FORMAT.md. "
        f"The simulated dataset works out of the box: --dataset {SIM_DATASET}"
    )


def _resolve_folder(spec: str) -> Path:
    path = Path(spec[len(FOLDER_PREFIX) :]).expanduser()
    if not spec[len(FOLDER_PREFIX) :]:
        raise DatasetError("folder:PATH needs a path, e.g. --dataset folder:/data/my_videos")
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found (from --dataset {spec})")
    if (
        not _has_labelled_splits(path)
        and not unlabelled_entries(path)
        and not any(unlabelled_entries(d) for d in path.iterdir() if d.is_dir())
    ):
        raise DatasetError(
            f"{path}: holds neither a dataset (train/ val/ test/ with <episode>.json) nor videos "
            f"({'/'.join(VIDEO_EXTENSIONS)}) or frame folders"
        )
    return path


def resolve_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    sim_episodes: int | None = None,
    sim_size: int | None = None,
    sim_seed: int = 0,
    sim_anomaly_rate: float | None = None,
    sim_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Root folder of dataset ``name``, generating ``sim_pouring`` on first use.

    Unknown names and absent real datasets raise :class:`DatasetError` saying what to do.
    """
    if name == SIM_DATASET:
        return _resolve_sim(
            cache_dir, sim_episodes, sim_size, sim_seed, sim_anomaly_rate, sim_workers, progress
        )
    if name in REAL_DATASETS or name.startswith("penn_action/"):
        return _resolve_real(name, data_root)
    if name.startswith(FOLDER_PREFIX):
        return _resolve_folder(name)
    raise DatasetError(
        f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
        "(penn_action also as penn_action/<action>)"
    )


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def unlabelled_entries(folder: Path) -> list[Path]:
    """Videos and frame folders directly inside ``folder``, sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and ((p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or _is_frame_folder(p))
    )


def probe_video(path: Path) -> tuple[int, float]:
    """(frame count, fps) without decoding pixels; frame folders count their images."""
    if path.is_dir():
        count = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        return count, DEFAULT_FRAME_FOLDER_FPS
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: file has no video stream")
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size)
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FRAME_FOLDER_FPS)
    except DatasetError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt video ({exc})") from exc
    if count == 0:
        raise DatasetError(f"{path}: video has no frames")
    return count, fps


def unlabelled_episodes(folder: str | os.PathLike, split: str) -> list[Episode]:
    """Episodes for the videos/frame folders in ``folder`` (no label files): ``phase_ids=None``."""
    folder = Path(folder)
    episodes = []
    for entry in unlabelled_entries(folder):
        num_frames, fps = probe_video(entry)
        name = entry.stem if entry.is_file() else entry.name
        labels = EpisodeLabels(video=entry.name, fps=fps, num_frames=num_frames)
        episodes.append(Episode(name, split, folder / f"{name}.json", labels))
    return episodes


def load_dataset_split(name: str, split: str, **kwargs) -> list[Episode]:
    """Episodes of ``split`` of dataset ``name`` (``kwargs`` go to :func:`resolve_dataset`)."""
    root = resolve_dataset(name, **kwargs)
    if _has_labelled_splits(root):
        return load_split(root, split)
    split_dir = root / split
    if split_dir.is_dir():
        episodes = unlabelled_episodes(split_dir, split)
        if episodes:
            return episodes
    if any(unlabelled_entries(d) for d in root.iterdir() if d.is_dir() and d.name in SPLITS):
        raise DatasetError(f"{split_dir}: split {split!r} not found or holds no videos")
    episodes = unlabelled_episodes(root, split)  # flat folder: every split is all videos
    if not episodes:
        raise DatasetError(f"{root}: no videos or frame folders found")
    return episodes
