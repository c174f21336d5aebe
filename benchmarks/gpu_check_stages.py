"""The stages of ``benchmarks/gpu_check.py`` that run the project's command lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpu_check_common import Check, CliRun, StageError

PAPER_CONFIG = "config/train/pouring.yaml"
LIGHT_CONFIG = "config/train/sim_pouring.yaml"
TRAIN = ["-m", "tcc_model.train"]


def train_args(
    check: Check, kind: str, out: Path, steps: int, *extra: str, sets: tuple[str, ...] = ()
) -> list[str]:
    """``tcc_model.train`` arguments of a ``paper`` or ``light`` run of ``steps`` steps.

    The paper model is trained from scratch (``train_base=all``: no downloaded weights). Runs
    log three windows (the last one, after warm-up, gives clips/s), write only ``last.pt`` and
    validate once at the end. The learning rate is constant, so a run split in two halves
    follows the same schedule as a straight one. ``extra``: more flags; ``sets``: more
    ``--set`` items.
    """
    s = check.settings
    if kind == "paper":
        config, batch = PAPER_CONFIG, s.paper_batch
        config_sets = [
            "model.train_base=all",
            f"model.image_size={s.paper_size}",
            f"data.num_frames={s.paper_frames}",
        ]
        if s.paper_head_channels:
            width = s.paper_head_channels
            config_sets += [f"model.head_channels={width}", f"model.fc_channels={width}"]
        if s.paper_encoder:
            config_sets.append(f"model.encoder={s.paper_encoder}")
    elif kind == "light":
        config, batch = LIGHT_CONFIG, s.light_batch
        config_sets = [f"data.num_frames={s.light_frames}"]
    else:
        raise ValueError(f"kind must be 'paper' or 'light', got {kind!r}")
    config_sets += [
        f"data.num_workers={s.workers}",
        f"train.log_interval={max(1, steps // 3)}",
        "train.checkpoint_interval=1000000000",
        "train.val_interval=0",
        "train.val_batches=2",
        "train.val_max_videos=2",
        "train.lr_schedule=constant",
        "train.warmup_steps=0",
    ]
    args = [
        *TRAIN,
        "--dataset",
        f"folder:{check.data}",
        "--config",
        config,
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--device",
        check.device,
        "--no-progress",
    ]
    if check.amp:
        args.append("--amp")
    return [*args, *extra, "--set", *config_sets, *sets]


def _train_result(run: CliRun, batch: int, steps: int) -> dict[str, Any]:
    """Throughput of a finished training run: the CLI's last window and the whole wall time."""
    metrics = run.metrics
    if "clips_per_s" not in metrics:
        raise StageError("the training command printed no clips_per_s", tail=run.tail())
    return {
        "clips_per_s": metrics["clips_per_s"],
        "wall_s": round(run.seconds, 2),
        "clips_per_s_wall": round(batch * steps / run.seconds, 2),
        "final_metrics": metrics,
    }


def _step_of(path: Path) -> int:
    from tcc_model.checkpoint import load_checkpoint

    return int(load_checkpoint(path)["step"])


def paper_train(check: Check) -> dict[str, Any]:
    """Train the paper model (ResNet-50 to conv4c + 3-D conv head) through the CLI."""
    s = check.settings
    out = check.work / "paper"
    run = check.run_cli("paper_train", train_args(check, "paper", out, s.paper_steps))
    result = _train_result(run, s.paper_batch, s.paper_steps)
    result["amp"] = check.amp
    result["config"] = _run_config(out)
    return result


def light_train(check: Check) -> dict[str, Any]:
    """Train the light real-time model through the CLI."""
    s = check.settings
    out = check.work / "light"
    run = check.run_cli("light_train", train_args(check, "light", out, s.light_steps))
    result = _train_result(run, s.light_batch, s.light_steps)
    result["config"] = _run_config(out)
    return result


def _run_config(out: Path) -> dict[str, Any]:
    """The training section a run wrote to ``OUT/config.yaml`` (AMP, compile, batch, ...)."""
    import yaml

    path = out / "config.yaml"
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text()) or {}
    train = config.get("train", {})
    keys = [k for k in train if "amp" in k or k in ("compile", "batch_size", "device", "steps")]
    return {k: train[k] for k in keys}


def export(check: Check) -> dict[str, Any]:
    """Export the device-trained paper checkpoint to a bundle (ONNX parity checked by export)."""
    import yaml

    checkpoint = check.work / "paper" / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise StageError("no paper checkpoint: paper_train did not finish")
    bundle = check.work / "paper_bundle"
    argv = ["-m", "tcc_model.export", "--checkpoint", str(checkpoint), "--out", str(bundle)]
    run = check.run_cli("export", [*argv, "--dataset", f"folder:{check.data}", "--overwrite"])
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    verification = manifest.get("verification", {})
    keep = ("max_abs_diff_embeddings", "tolerance_abs", "frames", "max_abs_diff_features_rel")
    return {
        "bundle": str(bundle),
        "wall_s": round(run.seconds, 2),
        "verification": {k: verification[k] for k in keep if k in verification},
    }


def resume(check: Check) -> dict[str, Any]:
    """``--resume`` on the training device: the paper run continued by ``resume_steps`` steps
    (none when 0), and a light run in halves.

    The light comparison trains ``light_steps`` steps straight (the ``light_train`` run) and
    as two halves with a restart in between; on the CPU the two are bit-identical, on CUDA
    non-deterministic kernels leave a small difference, reported relative to the weights.
    """
    s = check.settings
    result: dict[str, Any] = {}
    paper = check.work / "paper"
    if s.resume_steps and (paper / "checkpoints" / "last.pt").is_file():
        target = s.paper_steps + s.resume_steps
        args = train_args(check, "paper", paper, target, "--resume")
        run = check.run_cli("resume_paper", args)
        if "resumed from" not in run.output:
            raise StageError("the paper run did not say it resumed", tail=run.tail())
        step = _step_of(paper / "checkpoints" / "last.pt")
        if step != target:
            raise StageError(f"resumed paper run ended at step {step}, expected {target}")
        result["paper"] = {"from_step": s.paper_steps, "to_step": step, "wall_s": run.seconds}
    straight = check.work / "light" / "checkpoints" / "last.pt"
    if not straight.is_file():
        raise StageError("no light checkpoint: light_train did not finish", **result)
    halves = check.work / "light_halves"
    half = max(1, s.light_steps // 2)
    check.run_cli("resume_light_1", train_args(check, "light", halves, half))
    args = train_args(check, "light", halves, s.light_steps, "--resume")
    check.run_cli("resume_light_2", args)
    result["light"] = compare_checkpoints(straight, halves / "checkpoints" / "last.pt")
    result["light"]["split_at"] = half
    return result


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    """Largest weight difference of two checkpoints, absolute and relative to the weights."""
    import torch

    from tcc_model.checkpoint import load_checkpoint

    ca, cb = load_checkpoint(a), load_checkpoint(b)
    if int(ca["step"]) != int(cb["step"]):
        raise StageError(f"checkpoints at different steps: {ca['step']} vs {cb['step']}")
    diff = scale = 0.0
    for key, wa in ca["model"].items():
        if not torch.is_floating_point(wa):
            continue
        wb = cb["model"][key]
        diff = max(diff, float((wa.double() - wb.double()).abs().max()))
        scale = max(scale, float(wa.double().abs().max()))
    return {
        "step": int(ca["step"]),
        "max_abs_weight_diff": diff,
        "max_rel_weight_diff": diff / max(scale, 1e-30),
        "bit_identical": diff == 0.0,
    }


def torchrun(check: Check) -> dict[str, Any]:
    """A ``torchrun`` launch of the light model (NCCL on CUDA, gloo on CPU).

    ``ddp_used``: DistributedDataParallel built its reducer (c10d's INFO log); ``nccl_used``:
    NCCL created a communicator (``NCCL_DEBUG=INFO``), on CUDA only.
    """
    s = check.settings
    out = check.work / "torchrun"
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    launcher += ["--nproc_per_node", str(s.torchrun_procs)]
    args = train_args(check, "light", out, s.torchrun_steps)
    env = {"TORCH_CPP_LOG_LEVEL": "INFO", "TORCH_DISTRIBUTED_DEBUG": "INFO"}
    if check.on_cuda:
        env["NCCL_DEBUG"] = "INFO"
    run = check.run_cli("torchrun", [*launcher, *args], env=env)
    step = _step_of(out / "checkpoints" / "last.pt")
    if step != s.torchrun_steps:
        raise StageError(f"torchrun run ended at step {step}, expected {s.torchrun_steps}")
    result: dict[str, Any] = {
        "processes": s.torchrun_procs,
        "wall_s": round(run.seconds, 2),
        "ddp_used": "Reducer initialized" in run.output,
        "nccl_used": ("NCCL INFO" in run.output) if check.on_cuda else None,
        "clips_per_s": run.metrics.get("clips_per_s"),
    }
    if not result["ddp_used"]:
        result["note"] = (
            f"the run finished, but with {s.torchrun_procs} process(es) the trainer did not "
            "wrap the model in DistributedDataParallel, so the collective backend was not used"
        )
    return result


def _compile(
    check: Check, kind: str, steps: int, batch: int, eager: str, sets: tuple[str, ...] = ()
) -> dict[str, Any]:
    out = check.work / f"{kind}_compile"
    args = train_args(check, kind, out, steps, "--compile", sets=sets)
    run = check.run_cli(f"{kind}_compile", args)
    result = _train_result(run, batch, steps)
    eager_rate = check.results.get(eager, {}).get("clips_per_s")
    if eager_rate:
        result["speedup_vs_eager"] = round(result["clips_per_s"] / eager_rate, 3)
    return result


def compile_light(check: Check) -> dict[str, Any]:
    """``--compile`` of the light model; clips/s against the eager ``light_train`` run."""
    s = check.settings
    return _compile(check, "light", s.compile_steps, s.light_batch, "light_train")


def compile_paper(check: Check) -> dict[str, Any]:
    """``--compile`` of the paper model (long compile: last, run only when time is left).

    Without validation: the eval-mode graphs would be compiled again at the end (minutes on
    a CPU for the light model too; the ``compile`` stage keeps that path).
    """
    s = check.settings
    steps = max(s.compile_steps // 2, 1)
    no_val = ("data.val_split=none",)
    return _compile(check, "paper", steps, s.paper_batch, "paper_train", sets=no_val)
