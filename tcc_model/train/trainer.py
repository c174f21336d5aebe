"""The :class:`Trainer`: data, model and optimiser from a typed config, the step, checkpoints.

The loop itself (loader, logging, validation) is :mod:`tcc_model.train.loop`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcc_model.algos import TrainingAlgo
from tcc_model.checkpoint import (
    get_rng_state,
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
    set_rng_state,
)
from tcc_model.errors import ConfigError, DatasetError, UserError
from tcc_model.models import build_model
from tcc_model.train.config import TrainingConfig
from tcc_model.train.loop import run_loop, validation_metrics
from tcc_model.train.module import (
    TrainModule,
    amp_dtype_for,
    compile_embedder,
    unwrap,
)
from tcc_model.train.order import (
    batch_positions,
    collate_batch,
    step_seed,
)
from tcc_model.utils import pick_device, seed_everything


class DivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite (the message names the step and what to change)."""


def _num_phases(episodes: Sequence[Any]) -> int:
    return max((len(e.labels.phase_names) for e in episodes), default=0)


class Trainer:
    """Builds data, model, optimiser from a resolved config and runs the training loop."""

    def __init__(
        self,
        config: TrainingConfig | Mapping[str, Any],
        out_dir: str | os.PathLike,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        train_episodes: list | None = None,
        val_episodes: list | None = None,
        resuming: bool = False,
    ) -> None:
        """``resuming``: the weights will come from a checkpoint (no backbone file needed)."""
        if not isinstance(config, TrainingConfig):
            config = TrainingConfig.from_dict(config)
        self.cfg = config
        self.config = config.to_dict()  # plain data, as stored in checkpoints
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = rank, world_size
        t = config.train
        self.seed, self.batch_size, self.total_steps = t.seed, t.batch_size, t.steps
        self.device = device or pick_device(t.device)
        self.model_cfg, self.algo_cfg = config.model, config.algo
        if t.threads is not None:
            torch.set_num_threads(t.threads)
        # The numbers of a run depend on the thread count (BatchNorm and GEMM reductions split
        # differently): record the one used.
        self.config["train"]["threads"] = torch.get_num_threads()
        self._check_backbone(resuming)
        self._setup_data(train_episodes, val_episodes)
        seed_everything(self.seed)
        self.model = build_model(self.model_cfg).to(self.device)
        self.algo = TrainingAlgo(
            self.algo_cfg, self.model_cfg.embedding_size, _num_phases(self.train_episodes)
        ).to(self.device)
        self.amp = t.amp
        amp_dtype = amp_dtype_for(self.device, t.amp)
        if t.amp and amp_dtype is None:
            self._log("train.amp: this CPU has no native bfloat16 (AVX512-BF16/AMX); float32")
        self.module = TrainModule(
            self.model, self.algo, self.algo_cfg.l2_weight, amp_dtype, t.distinct_frames
        )
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.step = 0
        if t.compile:
            compile_embedder(self.model)
        self.wrapped: nn.Module = self.module
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from torch.nn.parallel import DistributedDataParallel

            self.wrapped = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # -- setup -------------------------------------------------------------------------------
    def _check_backbone(self, resuming: bool) -> None:
        m = self.model_cfg
        if m.encoder == "resnet50_conv4c" and m.train_base != "all" and not m.backbone_weights:
            if not resuming:
                raise ConfigError(
                    f"the resnet50_conv4c encoder with train_base={m.train_base!r} needs "
                    "ImageNet weights: pass --backbone-weights PATH (a local torchvision "
                    "resnet50 state dict), or --set model.train_base=all to train it from scratch"
                )

    def _setup_data(self, train_episodes: list | None, val_episodes: list | None) -> None:
        from tcc_model.data.sampling import FrameCache, VideoClipDataset

        d = self.cfg.data
        if train_episodes is None:
            train_episodes = self._load_split(d.train_split)
        if val_episodes is None:
            try:
                val_episodes = self._load_split(d.val_split)
            except ValueError as exc:  # no val split: train without validation
                self._log(f"no validation ({exc})")
                val_episodes = []
        if d.exclude_anomalous:
            train_episodes = self._normal_only(train_episodes, "train")
            val_episodes = self._normal_only(val_episodes, "val")
        self.train_episodes, self.val_episodes = list(train_episodes), list(val_episodes)
        clip_args = dict(
            num_frames=d.num_frames,
            context_frames=self.model_cfg.context_frames,
            context_stride=self.model_cfg.context_stride,
            sampling=d.sampling,
            sample_stride=d.sample_stride,
            tcn_positives=self.algo_cfg.uses_tcn_sampling,
            image_size=self.model_cfg.image_size,
        )
        self.train_clips = VideoClipDataset(
            self.train_episodes,
            augment=d.augment,
            seed=self.seed,
            max_speedup=d.speed_augment,
            **clip_args,
        )
        self.val_clips = None
        if len(self.val_episodes) >= 2:
            cache = FrameCache(self.model_cfg.image_size)
            self.val_clips = VideoClipDataset(
                self.val_episodes, augment=False, seed=self.seed + 1, cache=cache, **clip_args
            )

    def _load_split(self, split: str) -> list:
        from tcc_model.data.registry import load_dataset_split

        d = self.cfg.data
        return load_dataset_split(
            self.cfg.dataset,
            split,
            data_root=d.data_root,
            cache_dir=d.cache_dir,
            sim_episodes=d.sim_episodes,
            sim_size=d.sim_size or self.model_cfg.image_size,
            sim_seed=d.sim_seed,
            progress=self.rank == 0,
        )

    def _normal_only(self, episodes: Sequence[Any], split: str) -> list:
        """Drop episodes labelled with an anomaly: every video must show the same task."""
        normal = [e for e in episodes if e.labels.anomaly is None]
        if len(normal) < len(episodes):
            self._log(
                f"{split}: using {len(normal)} normal episodes, excluded "
                f"{len(episodes) - len(normal)} with an anomaly (data.exclude_anomalous)"
            )
        if episodes and not normal:
            raise DatasetError(
                f"every {split} episode is labelled anomalous; set "
                "--set data.exclude_anomalous=false to train on them anyway"
            )
        return normal

    def _log(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step``: linear warmup, then ``train.lr_schedule`` (a pure function
        of the step, so ``--resume`` continues the schedule exactly)."""
        t = self.cfg.train
        if step < t.warmup_steps:
            return t.lr * (step + 1) / t.warmup_steps
        if t.lr_schedule == "constant":
            return t.lr
        span = max(self.total_steps - t.warmup_steps, 1)
        progress = min(step - t.warmup_steps, span) / span
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    # -- steps -------------------------------------------------------------------------------
    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}

    def batch_for(self, step: int, rank: int | None = None, world_size: int | None = None) -> dict:
        """The training batch of ``step`` (collated, on CPU); defaults to this process' rank."""
        rank = self.rank if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        keys = batch_positions(
            step, self.batch_size, len(self.train_clips), self.seed, rank, world_size
        )
        return collate_batch(self.train_clips, keys)

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

    def optimize(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        """One optimisation step on ``batch`` at ``self.step``; returns the loss and its parts."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss, parts = self.loss_for(batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(
                f"loss is {value} at step {self.step}; lower train.lr or disable --amp"
            )
        self.step += 1
        return value, parts

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
            extra={"algo": unwrap(self.algo).state_dict(), "scaler": self.scaler.state_dict()},
        )
        if periodic:
            save_checkpoint(self.checkpoint_dir / f"step_{self.step:06d}.pt", **kwargs)
        save_checkpoint(self.checkpoint_dir / "last.pt", **kwargs)

    def restore(self, path: str | os.PathLike) -> None:
        """Load model/optimizer/algo/scaler/step/RNG from a checkpoint of the same architecture."""
        ckpt = load_checkpoint(path, map_location="cpu")
        load_state_checked(unwrap(self.model), ckpt["model"], f"checkpoint {str(path)!r}")
        load_state_checked(
            unwrap(self.algo), ckpt["extra"].get("algo", {}), f"checkpoint {str(path)!r} (algo)"
        )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["extra"].get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["extra"]["scaler"])
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng_state"])

    # -- validation and the loop (tcc_model.train.loop) --------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean val loss over ``val_batches`` fixed batches and Kendall's tau of val embeddings.

        Runs eagerly under ``--compile``: eval mode and whole-video batches would otherwise be
        compiled again (minutes) for a few validation batches.
        """
        with torch.compiler.set_stance("force_eager"):
            return validation_metrics(self)

    def train(self) -> dict[str, float]:
        """Run from ``self.step`` to ``train.steps``; returns the last logged metrics."""
        return run_loop(self)
