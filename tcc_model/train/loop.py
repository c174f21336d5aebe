"""The training loop of :class:`~tcc_model.train.trainer.Trainer`: loader, logging, validation.

:func:`run_loop` steps the trainer (``Trainer.optimize``) from its current step to
``train.steps``, logs the loss to TensorBoard and the progress bar every ``log_interval``,
saves periodic checkpoints and validates every ``val_interval`` and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import DataLoader

from tcc_model.cli import stage
from tcc_model.train.module import unwrap
from tcc_model.train.order import EpochItems, StepBatchSampler, batch_positions, collate_batch

if TYPE_CHECKING:
    from tcc_model.train.trainer import Trainer


def validation_metrics(trainer: Trainer) -> dict[str, float]:
    """The body of :meth:`Trainer.validate` (val loss and Kendall's tau; ``{}`` without val)."""
    from tcc_model.embed import embed_frames
    from tcc_model.evaluation import kendalls_tau

    if trainer.val_clips is None:
        return {}
    t = trainer.cfg.train
    model = unwrap(trainer.model)
    trainer.module.eval()
    try:
        losses = []
        for i in range(t.val_batches):
            keys = batch_positions(i, trainer.batch_size, len(trainer.val_clips), trainer.seed + 1)
            batch = collate_batch(trainer.val_clips, keys)
            loss, _ = trainer.loss_for(batch, i, rank=0, module=trainer.module)
            losses.append(float(loss))
        limit = t.val_max_videos or len(trainer.val_episodes)
        embs = [
            embed_frames(model, trainer.val_clips.cache.get(e), device=trainer.device)
            for e in trainer.val_episodes[:limit]
        ]
        tau = kendalls_tau(embs, stride=t.tau_stride)
    finally:
        trainer.module.train()
    out = {"kendalls_tau": tau}
    if losses:
        out["loss"] = float(np.mean(losses))
    return out


def step_loader(
    clips: Any,
    sampler: StepBatchSampler,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """The training's ``DataLoader``: ``sampler``'s step-keyed batches of ``clips``, made by
    ``workers`` processes (0: in the calling thread)."""
    from tcc_model.data.sampling import worker_threads_init

    return DataLoader(
        EpochItems(clips),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_threads_init if workers else None,
        # a fresh interpreter per worker: forking a process that runs threads (TensorBoard's
        # writer, an executor, OpenMP) can copy a held lock into the worker and hang it
        multiprocessing_context="spawn" if workers else None,
    )


def _loader(trainer: Trainer) -> DataLoader:
    """The batches from ``trainer.step`` on (videos decoded first without workers)."""
    workers = trainer.cfg.data.num_workers
    sampler = StepBatchSampler(
        trainer.step,
        trainer.total_steps,
        trainer.batch_size,
        len(trainer.train_clips),
        trainer.seed,
        trainer.rank,
        trainer.world_size,
    )
    if workers == 0 and trainer.step < trainer.total_steps:
        with stage(f"decoding {len(trainer.train_episodes)} training videos"):
            trainer.train_clips.preload()
    return step_loader(trainer.train_clips, sampler, workers, trainer.device.type == "cuda")


def _validate_and_log(trainer: Trainer, writer: Any, bar: Any, final: bool) -> dict[str, float]:
    """Validate, log to TensorBoard and the bar; the metrics prefixed ``val_``."""
    if final and trainer.val_clips is not None:
        with stage("final validation", stream=sys.stderr):
            val = trainer.validate()
    else:
        val = trainer.validate()
    if writer is not None:
        for key, value in val.items():
            writer.add_scalar(f"val/{key}", value, trainer.step)
    if val:
        bar.write(f"step {trainer.step}: " + ", ".join(f"val {k} {v:.4f}" for k, v in val.items()))
    return {f"val_{k}": v for k, v in val.items()}


def run_loop(trainer: Trainer) -> dict[str, float]:
    """:meth:`Trainer.train`: from ``trainer.step`` to ``train.steps``; the last logged metrics."""
    from tqdm.auto import tqdm

    t = trainer.cfg.train
    writer = None
    if trainer.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(trainer.out_dir / "tb"))
    loader = _loader(trainer)
    trainer.module.train()
    disable = trainer.rank != 0 or not t.progress
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.step,
        unit="step",
        dynamic_ncols=True,
        disable=disable,
    )
    metrics: dict[str, float] = {}
    window: list[float] = []
    tic, clips = time.perf_counter(), 0
    try:
        for batch in loader:
            value, parts = trainer.optimize(batch)
            clips += trainer.batch_size * trainer.world_size
            window.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            last = trainer.step == trainer.total_steps
            if trainer.step % t.log_interval == 0 or last:
                metrics = {"loss": float(np.mean(window)), **parts}
                metrics["clips_per_s"] = clips / max(time.perf_counter() - tic, 1e-9)
                if writer is not None:
                    for key, val in metrics.items():
                        writer.add_scalar(f"train/{key}", val, trainer.step)
                window, tic, clips = [], time.perf_counter(), 0
            if trainer.step % t.checkpoint_interval == 0:
                trainer.save(periodic=True)
            due = t.val_interval and trainer.step % t.val_interval == 0
            if trainer.rank == 0 and (due or last):
                metrics.update(_validate_and_log(trainer, writer, bar, final=last))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    trainer.save(periodic=False)
    return metrics
