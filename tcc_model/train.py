"""Training CLI: ``python -m tcc_model.train --dataset sim_pouring [options]``.

Configuration is layered: built-in reference defaults < ``config/train/<dataset>.yaml`` (or
``--config FILE``) < command-line flags < ``--set section.key=value``. Writes
``OUT/config.yaml``, ``OUT/checkpoints/last.pt`` (+ ``step_XXXXXX.pt`` every
``train.checkpoint_interval`` steps) and TensorBoard logs in ``OUT/tb``.

Reproducibility: batch ``s`` on rank ``r`` is a pure function of ``(seed, s, r)``: videos come from
per-epoch permutations of the training set, clips from ``VideoClipDataset`` streams
``(seed, epoch, video)``, and the torch RNG (dropout, loss sampling) is re-seeded from
``(seed, s, r)`` at every step. ``--resume`` therefore continues a killed run exactly.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m tcc_model.train ...`` (DDP; NCCL on CUDA,
gloo on CPU). ``train.batch_size`` is per process, as the reference's per-replica batch.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tcc_model.algos import ALGOS, AlgoConfig, TrainingAlgo, l2_regularization
from tcc_model.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
    set_rng_state,
)
from tcc_model.models import Embedder, ModelConfig, build_model
from tcc_model.utils import pick_device, seed_everything, write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "train"

DEFAULT_CONFIG: dict[str, Any] = {
    "dataset": "sim_pouring",
    "data": {
        "num_frames": 20,
        "sampling": "offset_uniform",
        "sample_stride": 16,
        "augment": True,
        "num_workers": 0,
        "train_split": "train",
        "val_split": "val",
        "data_root": None,
        "cache_dir": None,
        "sim_episodes": None,
        "sim_size": None,
        "sim_seed": 0,
        "exclude_anomalous": True,
    },
    "model": ModelConfig().to_dict(),
    "algo": AlgoConfig().to_dict(),
    "train": {
        "steps": 150000,
        "batch_size": 2,
        "lr": 1e-4,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "seed": 0,
        "device": None,
        "amp": False,
        "compile": False,
        "checkpoint_interval": 1000,
        "log_interval": 100,
        "val_interval": 1000,
        "val_batches": 20,
        "val_max_videos": 0,
        "tau_stride": 2,
        "progress": True,
    },
}

# Options that may change when resuming without changing the training trajectory.
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
    },
    "data": {"num_workers", "data_root", "cache_dir"},
}


class TrainError(ValueError):
    """A user error in the training setup (printed as one ``error:`` line by the CLI)."""


# --------------------------------------------------------------------------------------------
# Configuration


def _merge(base: dict[str, Any], update: dict[str, Any], where: str) -> dict[str, Any]:
    """Recursive dict update that rejects keys ``base`` does not have."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise TrainError(f"{where}: unknown config key {key!r}; valid: {sorted(out)}")
        if isinstance(out[key], dict) and key != "extra":
            if not isinstance(value, dict):
                raise TrainError(f"{where}: {key!r} must be a mapping, got {value!r}")
            out[key] = _merge(out[key], value, f"{where}: {key}")
        else:
            out[key] = value
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training YAML config."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"--config {str(path)!r} does not exist (see config/train/*.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise TrainError(f"--config {str(path)!r} must hold a YAML mapping")
    return data


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``['train.lr=3e-4', 'model.encoder=vggm']`` → nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainError(f"--set {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config updates from the explicit command-line flags."""
    train: dict[str, Any] = {}
    for flag, key in [
        ("steps", "steps"),
        ("batch_size", "batch_size"),
        ("seed", "seed"),
        ("device", "device"),
        ("lr", "lr"),
        ("amp", "amp"),
        ("compile", "compile"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            train[key] = value
    out: dict[str, Any] = {}
    if train:
        out["train"] = train
    if args.algo is not None:
        out["algo"] = {"name": args.algo}
    if args.backbone_weights is not None:
        out["model"] = {"backbone_weights": args.backbone_weights}
    if args.data_root is not None:
        out["data"] = {"data_root": args.data_root}
    if args.no_progress:
        out.setdefault("train", {})["progress"] = False
    return out


def resolve_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Layer the configuration (see the module docstring); ``base`` replaces the defaults."""
    config = copy.deepcopy(base if base is not None else DEFAULT_CONFIG)
    config_path = args.config
    if config_path is None and base is None:
        candidate = CONFIG_DIR / f"{args.dataset.split('/')[0].split(':')[0]}.yaml"
        config_path = candidate if candidate.is_file() else None
    if config_path is not None:
        config = _merge(config, load_config_file(config_path), str(config_path))
    config["dataset"] = args.dataset
    config = _merge(config, cli_overrides(args), "command line")
    config = _merge(config, parse_set(args.set or []), "--set")
    # Validate the sections now, so typos fail before any data is loaded.
    ModelConfig.from_dict(config["model"])
    AlgoConfig.from_dict(config["algo"])
    t = config["train"]
    if int(t["batch_size"]) < 1 or int(t["steps"]) < 0:
        raise TrainError("train.batch_size must be >= 1 and train.steps >= 0")
    if "tcc" in config["algo"]["name"].split("+") and int(t["batch_size"]) < 2:
        raise TrainError("TCC aligns pairs of videos: --batch-size must be >= 2")
    return config


# --------------------------------------------------------------------------------------------
# Deterministic, resumable batch order


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the torch RNG for one optimisation step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank, 0x7CC]).generate_state(1)[0])


def batch_positions(
    step: int, batch_size: int, num_videos: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """``(epoch, video)`` pairs of the batch of ``rank`` at ``step``.

    The global stream is a concatenation of per-epoch permutations of the videos; each step
    takes the next ``world_size * batch_size`` entries and rank ``r`` the ``r``-th block (like a
    ``DistributedSampler`` that never drops a video), so any step can be recomputed in O(1).
    """
    start = (step * world_size + rank) * batch_size
    positions = np.arange(start, start + batch_size)
    epochs, offsets = positions // num_videos, positions % num_videos
    perms = {
        int(e): np.random.default_rng([seed, int(e), 0xB47C]).permutation(num_videos)
        for e in np.unique(epochs)
    }
    return [(int(e), int(perms[int(e)][o])) for e, o in zip(epochs, offsets)]


class StepBatchSampler:
    """Batch sampler yielding :func:`batch_positions` for steps ``start..stop-1``."""

    def __init__(
        self,
        start: int,
        stop: int,
        batch_size: int,
        num_videos: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.start, self.stop = start, stop
        self.args = (batch_size, num_videos, seed, rank, world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch_size, num_videos, seed, rank, world_size = self.args
        for step in range(self.start, self.stop):
            yield batch_positions(step, batch_size, num_videos, seed, rank, world_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class EpochItems(Dataset):
    """Indexes a ``VideoClipDataset`` by ``(epoch, video)`` (the clip depends only on those)."""

    def __init__(self, clips: Any) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        self.clips.set_epoch(epoch)
        return self.clips[index]


# --------------------------------------------------------------------------------------------
# Model + loss


class TrainModule(nn.Module):
    """Embedder + algorithm loss in one module (one DDP wrapper syncs both)."""

    def __init__(self, model: Embedder, algo: TrainingAlgo, l2_weight: float, amp_dtype=None):
        super().__init__()
        self.model = model
        self.algo = algo
        self.l2_weight = l2_weight
        self.amp_dtype = amp_dtype
        regularised = [model.head]
        if model.cfg.encoder != "resnet50_conv4c":  # trained from scratch
            regularised.append(model.encoder)
        self._regularised = regularised

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frames"]
        if self.amp_dtype is not None:
            with torch.autocast(frames.device.type, dtype=self.amp_dtype):
                embs = self.model(frames)
        else:
            embs = self.model(frames)
        loss, parts = self.algo(embs.float(), batch, generator)
        reg = l2_regularization(self._regularised, self.l2_weight).to(loss.device)
        parts["l2"] = float(reg.detach())
        return loss + reg, parts


def _num_phases(episodes: Sequence[Any]) -> int:
    return max((len(e.labels.phase_names) for e in episodes), default=0)


def _unwrap(module: nn.Module) -> nn.Module:
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


# --------------------------------------------------------------------------------------------
# Trainer


class Trainer:
    """Builds data, model, optimiser from a resolved config and runs the training loop."""

    def __init__(
        self,
        config: dict[str, Any],
        out_dir: str | os.PathLike,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        train_episodes: list | None = None,
        val_episodes: list | None = None,
        resuming: bool = False,
    ) -> None:
        """``resuming``: the weights will come from a checkpoint (no backbone file needed)."""
        from tcc_model.data.sampling import FrameCache, VideoClipDataset

        self.config = config
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = rank, world_size
        t, d = config["train"], config["data"]
        self.seed = int(t["seed"])
        self.batch_size = int(t["batch_size"])
        self.total_steps = int(t["steps"])
        self.device = device or pick_device(t["device"])
        self.model_cfg = ModelConfig.from_dict(config["model"])
        self.algo_cfg = AlgoConfig.from_dict(config["algo"])
        if (
            self.model_cfg.encoder == "resnet50_conv4c"
            and self.model_cfg.train_base != "all"
            and not self.model_cfg.backbone_weights
            and not resuming
        ):
            raise TrainError(
                "the resnet50_conv4c encoder with train_base="
                f"{self.model_cfg.train_base!r} needs ImageNet weights: pass --backbone-weights "
                "PATH (a local torchvision resnet50 state dict), or --set model.train_base=all "
                "to train it from scratch"
            )

        if train_episodes is None:
            train_episodes = self._load_split(d["train_split"])
        if val_episodes is None:
            try:
                val_episodes = self._load_split(d["val_split"])
            except ValueError as exc:  # no val split: train without validation
                self._log(f"no validation ({exc})")
                val_episodes = []
        if d["exclude_anomalous"]:
            train_episodes = self._normal_only(train_episodes, "train")
            val_episodes = self._normal_only(val_episodes, "val")
        self.train_episodes, self.val_episodes = list(train_episodes), list(val_episodes)
        clip_args = dict(
            num_frames=int(d["num_frames"]),
            context_frames=self.model_cfg.context_frames,
            context_stride=self.model_cfg.context_stride,
            sampling=d["sampling"],
            sample_stride=int(d["sample_stride"]),
            tcn_positives=self.algo_cfg.uses_tcn_sampling,
            image_size=self.model_cfg.image_size,
        )
        self.train_clips = VideoClipDataset(
            self.train_episodes, augment=bool(d["augment"]), seed=self.seed, **clip_args
        )
        self.val_clips = None
        if len(self.val_episodes) >= 2:
            self.val_clips = VideoClipDataset(
                self.val_episodes,
                augment=False,
                seed=self.seed + 1,
                cache=FrameCache(self.model_cfg.image_size),
                **clip_args,
            )

        seed_everything(self.seed)
        self.model = build_model(self.model_cfg).to(self.device)
        self.algo = TrainingAlgo(
            self.algo_cfg, self.model_cfg.embedding_size, _num_phases(self.train_episodes)
        ).to(self.device)
        self.amp = bool(t["amp"])
        amp_dtype = None
        if self.amp:
            amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.module = TrainModule(self.model, self.algo, self.algo_cfg.l2_weight, amp_dtype)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            params, lr=float(t["lr"]), weight_decay=float(t["weight_decay"])
        )
        self.lr_at(self.total_steps)  # reject an unknown train.lr_schedule before any work
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.step = 0
        if t["compile"]:
            self.model.compile()  # in place: state_dict keys stay unchanged
        self.wrapped: nn.Module = self.module
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.wrapped = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # -- helpers -----------------------------------------------------------------------------
    def _load_split(self, split: str) -> list:
        from tcc_model.data.registry import load_dataset_split

        d = self.config["data"]
        return load_dataset_split(
            self.config["dataset"],
            split,
            data_root=d["data_root"],
            cache_dir=d["cache_dir"],
            sim_episodes=d["sim_episodes"],
            sim_size=d["sim_size"] or self.config["model"]["image_size"],
            sim_seed=int(d["sim_seed"]),
            progress=self.rank == 0,
        )

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step``: linear warmup, then ``train.lr_schedule`` (a pure function
        of the step, so ``--resume`` continues the schedule exactly)."""
        t = self.config["train"]
        base, warmup = float(t["lr"]), int(t["warmup_steps"])
        if step < warmup:
            return base * (step + 1) / warmup
        schedule = t["lr_schedule"]
        if schedule == "constant":
            return base
        if schedule == "cosine":
            span = max(self.total_steps - warmup, 1)
            return base * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))
        raise TrainError(f"train.lr_schedule {schedule!r}: expected 'constant' or 'cosine'")

    def _normal_only(self, episodes: Sequence[Any], split: str) -> list:
        """Drop episodes labelled with an anomaly: every video must show the same task."""
        normal = [e for e in episodes if e.labels.anomaly is None]
        if len(normal) < len(episodes):
            self._log(
                f"{split}: using {len(normal)} normal episodes, excluded "
                f"{len(episodes) - len(normal)} with an anomaly (data.exclude_anomalous)"
            )
        if episodes and not normal:
            raise TrainError(
                f"every {split} episode is labelled anomalous; set "
                "--set data.exclude_anomalous=false to train on them anyway"
            )
        return normal

    def _log(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}

    def batch_for(self, step: int, rank: int | None = None, world_size: int | None = None) -> dict:
        """The training batch of ``step`` (collated, on CPU); defaults to this process' rank."""
        rank = self.rank if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        items = EpochItems(self.train_clips)
        keys = batch_positions(
            step, self.batch_size, len(self.train_clips), self.seed, rank, world_size
        )
        return torch.utils.data.default_collate([items[k] for k in keys])

    def loss_for(
        self,
        batch: dict[str, torch.Tensor],
        step: int,
        rank: int | None = None,
        module: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of ``batch`` at ``step``; the torch RNG is re-seeded from ``(seed, step, rank)``."""
        seed = step_seed(self.seed, step, self.rank if rank is None else rank)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        return (module or self.wrapped)(self.to_device(batch), generator)

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save(self, periodic: bool) -> None:
        if self.rank != 0:
            return
        kwargs = dict(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            config=self.config,
            rng_state=get_rng_state(),
            extra={"algo": _unwrap(self.algo).state_dict(), "scaler": self.scaler.state_dict()},
        )
        if periodic:
            save_checkpoint(self.checkpoint_dir / f"step_{self.step:06d}.pt", **kwargs)
        save_checkpoint(self.checkpoint_dir / "last.pt", **kwargs)

    def restore(self, path: str | os.PathLike) -> None:
        """Load model/optimizer/algo/scaler/step/RNG from a checkpoint of the same architecture."""
        ckpt = load_checkpoint(path, map_location="cpu")
        load_state_checked(_unwrap(self.model), ckpt["model"], f"checkpoint {str(path)!r}")
        load_state_checked(
            _unwrap(self.algo), ckpt["extra"].get("algo", {}), f"checkpoint {str(path)!r} (algo)"
        )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt["extra"] and ckpt["extra"]["scaler"]:
            self.scaler.load_state_dict(ckpt["extra"]["scaler"])
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng_state"])

    # -- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean val loss over ``val_batches`` fixed batches and Kendall's tau of val embeddings."""
        from tcc_model.embed import embed_frames

        if self.val_clips is None:
            return {}
        t = self.config["train"]
        model = _unwrap(self.model)
        self.module.eval()
        try:
            items = EpochItems(self.val_clips)
            losses = []
            for i in range(int(t["val_batches"])):
                keys = batch_positions(i, self.batch_size, len(self.val_clips), self.seed + 1)
                batch = torch.utils.data.default_collate([items[k] for k in keys])
                loss, _ = self.loss_for(batch, i, rank=0, module=self.module)
                losses.append(float(loss))
            limit = int(t["val_max_videos"]) or len(self.val_episodes)
            embs = [
                embed_frames(model, self.val_clips.cache.get(e), device=self.device)
                for e in self.val_episodes[:limit]
            ]
            tau = self._kendalls_tau(embs, int(t["tau_stride"]))
        finally:
            self.module.train()
        out = {"kendalls_tau": tau}
        if losses:
            out["loss"] = float(np.mean(losses))
        return out

    @staticmethod
    def _kendalls_tau(embs: list[np.ndarray], stride: int) -> float:
        from tcc_model.evaluation import kendalls_tau

        return kendalls_tau(embs, stride=stride)

    # -- loop --------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Run from ``self.step`` to ``train.steps``; returns the last logged metrics."""
        from tqdm.auto import tqdm

        t, d = self.config["train"], self.config["data"]
        writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out_dir / "tb"))
        loader = DataLoader(
            EpochItems(self.train_clips),
            batch_sampler=StepBatchSampler(
                self.step,
                self.total_steps,
                self.batch_size,
                len(self.train_clips),
                self.seed,
                self.rank,
                self.world_size,
            ),
            num_workers=int(d["num_workers"]),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if int(d["num_workers"]) else None,
        )
        if int(d["num_workers"]) == 0:
            self.train_clips.preload()
        self.module.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=self.rank != 0 or not t["progress"],
        )
        metrics: dict[str, float] = {}
        window: list[float] = []
        tic, clips = time.perf_counter(), 0
        try:
            for batch in loader:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                loss, parts = self.loss_for(batch, self.step)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss is {value} at step {self.step}; lower train.lr or disable --amp"
                    )
                self.step += 1
                clips += self.batch_size * self.world_size
                window.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if self.step % int(t["log_interval"]) == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - tic
                    metrics = {"loss": float(np.mean(window)), **parts}
                    metrics["clips_per_s"] = clips / max(elapsed, 1e-9)
                    if writer is not None:
                        for key, val in metrics.items():
                            writer.add_scalar(f"train/{key}", val, self.step)
                    window, tic, clips = [], time.perf_counter(), 0
                if self.step % int(t["checkpoint_interval"]) == 0:
                    self.save(periodic=True)
                val_interval = int(t["val_interval"])
                if self.rank == 0 and (
                    (val_interval and self.step % val_interval == 0)
                    or self.step == self.total_steps
                ):
                    val = self.validate()
                    for key, val_value in val.items():
                        metrics[f"val_{key}"] = val_value
                        if writer is not None:
                            writer.add_scalar(f"val/{key}", val_value, self.step)
                    if val:
                        bar.write(
                            f"step {self.step}: "
                            + ", ".join(f"val {k} {v:.4f}" for k, v in val.items())
                        )
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        self.save(periodic=False)
        return metrics


def _worker_init(worker_id: int) -> None:
    from tcc_model.data.sampling import worker_threads_init

    worker_threads_init(worker_id)


# --------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.train",
        description="Train a TCC (or baseline) frame embedder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="sim_pouring",
        help="sim_pouring | pouring | penn_action[/ACTION] | folder:PATH",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config (default: config/train/<dataset>.yaml when it exists)",
    )
    p.add_argument("--algo", default=None, choices=ALGOS)
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=None, help="videos per batch (per process)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<algo>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cuda | cpu | cuda:N (default: CUDA if present)")
    p.add_argument(
        "--amp",
        action="store_true",
        default=None,
        help="mixed precision (fp16 on CUDA, bf16 on CPU)",
    )
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument(
        "--backbone-weights",
        default=None,
        help="local torchvision resnet50 ImageNet state dict (resnet50_conv4c encoder)",
    )
    p.add_argument("--data-root", default=None, help="root of the real datasets")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set train.lr=3e-4 model.encoder=vggm",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def _distributed_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _config_diff(a: dict, b: dict, keys: set[str] | None = None) -> list[str]:
    names = sorted(set(a) | set(b)) if keys is None else sorted(keys)
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in names if a.get(k) != b.get(k)]


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train as the command line says; returns the final metrics."""
    rank, world_size, local_rank = _distributed_env()
    algo_name = args.algo or "train"
    out_dir = Path(
        args.out or f"runs/{args.dataset.replace(':', '_').replace('/', '_')}-{algo_name}"
    )
    last = out_dir / "checkpoints" / "last.pt"

    ckpt_config = None
    if args.resume and last.is_file():
        ckpt_config = load_checkpoint(last)["config"]
    elif last.is_file():
        raise TrainError(
            f"{out_dir} already holds a run ({last}); pass --resume to continue it or choose "
            "another --out"
        )
    config = resolve_config(args, base=ckpt_config)
    if ckpt_config is not None:
        model_diff = _config_diff(
            {**ckpt_config["model"], "backbone_weights": None},
            {**config["model"], "backbone_weights": None},
        )
        if model_diff:
            raise CheckpointError(
                f"checkpoint {last} is from another architecture ({'; '.join(model_diff)}); "
                "resume with the same model config or use a new --out"
            )
        for section, allowed in RUNTIME_KEYS.items():
            changed = [
                k
                for k in _config_diff(ckpt_config[section], config[section])
                if k.split(":")[0] not in allowed
            ]
            if changed and rank == 0:
                print(
                    f"warning: resuming with changed {section} settings: {changed}", file=sys.stderr
                )
        config["model"]["backbone_weights"] = None  # the checkpoint holds the weights

    device = pick_device(config["train"]["device"])
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trainer = Trainer(
            config,
            out_dir,
            rank=rank,
            world_size=world_size,
            device=device,
            resuming=ckpt_config is not None,
        )
        if ckpt_config is not None:
            trainer.restore(last)
            trainer._log(f"resumed from {last} at step {trainer.step}")
        elif args.resume:
            trainer._log(f"no checkpoint in {out_dir}; starting from step 0")
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        return trainer.train()
    finally:
        if world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = run(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if metrics:
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
