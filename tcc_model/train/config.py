"""Training configuration: typed sections and their layering.

Layers, later wins: the defaults below < ``config/train/<dataset>.yaml`` (or ``--config FILE``)
< command-line flags < ``--set section.key=value``. Every layer is checked against the typed
sections (:class:`DataConfig`, :class:`~tcc_model.models.ModelConfig`,
:class:`~tcc_model.algos.AlgoConfig`, :class:`TrainConfig`) as it is applied, so an unknown key
or a value of the wrong type fails with a :class:`~tcc_model.errors.ConfigError` naming the key,
the value and the expected type before any data loads.

Default configs are looked up next to the source tree (``config/train``) and, in a colcon
install, in ``share/tcc_ros/config/train`` (through ``ament_index_python``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tcc_model.algos import AlgoConfig
from tcc_model.config import apply_overrides, from_mapping, merge, to_dict
from tcc_model.errors import ConfigError, safe_text
from tcc_model.models import ModelConfig

SOURCE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "train"


@dataclass
class DataConfig:
    """Which videos train and how clips are sampled from them."""

    # main frames T per clip (TCN sampling doubles them: a positive before each)
    num_frames: int = 20
    # clip sampler: T sorted distinct frames from random offsets, or every sample_stride-th frame
    sampling: Literal["offset_uniform", "stride"] = "offset_uniform"
    # frame step of the 'stride' sampler
    sample_stride: int = 16
    # clip-consistent augmentation: true/"reference" (flip, brightness, contrast), "camera"
    # (exposure, white balance, hue, gamma, noise, blur, small warp: tcc_model.data.augment),
    # false/"none"
    augment: bool | Literal["none", "reference", "camera"] = True
    # temporal augmentation: each clip plays at a speed drawn from [1, speed_augment] times the
    # video's (frames skipped; context stride and TCN windows in the faster time); 1: off
    speed_augment: float = 1.0
    # DataLoader worker processes (0: decode in the training process)
    num_workers: int = 0
    # dataset split to train on
    train_split: str = "train"
    # dataset split to validate on (no validation when it does not exist)
    val_split: str = "val"
    # root of the real datasets (pouring, penn_action)
    data_root: str | None = None
    # cache of decoded/converted datasets
    cache_dir: str | None = None
    # sim_pouring: episodes to simulate (None: the dataset's default)
    sim_episodes: int | None = None
    # sim_pouring: rendered frame size (None: model.image_size)
    sim_size: int | None = None
    # sim_pouring: simulation seed
    sim_seed: int = 0
    # leave out episodes labelled with an anomaly (every video must show the same task)
    exclude_anomalous: bool = True

    def __post_init__(self) -> None:
        for key, ok in [
            ("num_frames", self.num_frames >= 2),
            ("sample_stride", self.sample_stride >= 1),
            ("num_workers", self.num_workers >= 0),
            ("speed_augment", 1.0 <= self.speed_augment <= 4.0),
        ]:
            if not ok:
                raise ConfigError(f"data.{key}={getattr(self, key)!r}: out of range")


@dataclass
class TrainConfig:
    """Optimisation, precision, threads and logging of one run."""

    # optimisation steps in total (a resumed run continues up to it)
    steps: int = 150000
    # videos per batch (per process under DDP)
    batch_size: int = 2
    # Adam learning rate
    lr: float = 1e-4
    # learning-rate schedule after the warmup
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # steps of linear warmup from lr/warmup_steps to lr
    warmup_steps: int = 0
    # Adam weight decay
    weight_decay: float = 0.0
    # seed of the model init, batch order, sampling and dropout
    seed: int = 0
    # cpu, cuda or cuda:N (None: CUDA when present)
    device: str | None = None
    # bfloat16 autocast of the embedder (CPU and CUDA; fp16 + loss scaling on GPUs without
    # bf16); the loss, the optimizer and the weights stay float32
    amp: bool = False
    # encode each distinct frame of a clip once and gather (context frames and TCN positives
    # repeat frames); BatchNorm's batch statistics then come from the distinct frames
    distinct_frames: bool = False
    # torch.compile the embedder (inductor with fallback_random: dropout matches eager)
    compile: bool = False
    # torch intra-op threads (None: torch's default, i.e. OMP_NUM_THREADS or the cores)
    threads: int | None = None
    # steps between checkpoints (OUT/checkpoints/step_XXXXXX.pt and last.pt)
    checkpoint_interval: int = 1000
    # steps between logged training metrics
    log_interval: int = 100
    # steps between validations (0: only at the end)
    val_interval: int = 1000
    # fixed validation batches for the val loss
    val_batches: int = 20
    # validation videos for Kendall's tau (0: all)
    val_max_videos: int = 0
    # frame stride of Kendall's tau
    tau_stride: int = 2
    # show a progress bar
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps >= 0, ">= 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("threads", self.threads is None or self.threads >= 1, ">= 1 or null"),
            ("checkpoint_interval", self.checkpoint_interval >= 1, ">= 1"),
            ("log_interval", self.log_interval >= 1, ">= 1"),
            ("val_interval", self.val_interval >= 0, ">= 0"),
            ("val_batches", self.val_batches >= 0, ">= 0"),
            (
                "val_max_videos",
                self.val_max_videos == 0 or self.val_max_videos >= 2,
                "0 (all) or >= 2 (Kendall's tau compares pairs of videos)",
            ),
            ("tau_stride", self.tau_stride >= 1, ">= 1"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"train.{key}={getattr(self, key)!r}: expected {expected}")


@dataclass
class TrainingConfig:
    """The whole configuration of a training run (stored in ``OUT/config.yaml`` and checkpoints)."""

    # sim_pouring | pouring | penn_action[/ACTION] | folder:PATH
    dataset: str = "sim_pouring"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if "tcc" in self.algo.name.split("+") and self.train.batch_size < 2:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size}: TCC aligns pairs of videos, "
                "--batch-size must be >= 2"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML / checkpoint)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> TrainingConfig:
        """Build and check; ``where`` names the source in messages."""
        return from_mapping(cls, data, where)


#: The defaults as plain data (the first layer).
DEFAULT_CONFIG: dict[str, Any] = TrainingConfig().to_dict()

#: Options that may change when resuming without changing the training trajectory.
RUNTIME_KEYS = {
    "train": {
        "steps",
        "device",
        "checkpoint_interval",
        "log_interval",
        "val_interval",
        "val_batches",
        "val_max_videos",
        "tau_stride",
        "progress",
        "compile",
        "threads",
    },
    "data": {"num_workers", "data_root", "cache_dir"},
}


def config_dirs() -> list[Path]:
    """Where default training configs live: the source tree, then the ROS package's share."""
    dirs = [SOURCE_CONFIG_DIR]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("tcc_ros")) / "config" / "train")
    except (ImportError, LookupError, ValueError, OSError):  # not a ROS install
        pass
    return [d for d in dirs if d.is_dir()]


def default_config_path(dataset: str) -> Path | None:
    """``config/train/<dataset name>.yaml`` when it exists (``folder:``/``a/b`` use the prefix)."""
    name = dataset.split("/")[0].split(":")[0]
    for directory in config_dirs():
        if (directory / f"{name}.yaml").is_file():
            return directory / f"{name}.yaml"
    return None


def find_config(name: str | Path) -> Path:
    """``--config`` as given, else a config of that name in :func:`config_dirs`."""
    path = Path(name)
    if path.is_file():
        return path
    for directory in config_dirs():
        for candidate in (directory / path.name, directory / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted(p.stem for d in config_dirs() for p in d.glob("*.yaml"))
    raise ConfigError(f"--config {safe_text(name)!r} does not exist; known configs: {known}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a training YAML config (a mapping; keys and types are checked when merged)."""
    path = find_config(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({safe_text(exc, 300)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must hold a YAML mapping of sections")
    return data


def layer_config(
    dataset: str,
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> TrainingConfig:
    """Layer the configuration (see the module docstring) and check it.

    ``base`` replaces the defaults and the dataset's default file (a resumed run's stored config).
    """
    config = merge(TrainingConfig, DEFAULT_CONFIG, base, "checkpoint") if base else DEFAULT_CONFIG
    if config_file is None and base is None:
        config_file = default_config_path(dataset)
    if config_file is not None:
        path = find_config(config_file)
        config = merge(TrainingConfig, config, load_config_file(path), str(path))
    config = merge(TrainingConfig, config, {"dataset": dataset}, "--dataset")
    if flags:
        config = merge(TrainingConfig, config, flags, "command line")
    config = apply_overrides(TrainingConfig, config, overrides, "--set")
    return TrainingConfig.from_dict(config)
