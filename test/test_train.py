"""Training: algorithms, batch order, the CLI, resume after kill, DDP (gloo) equivalence."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tcc_model.algos import ALGOS, AlgoConfig, TrainingAlgo, split_even_odd
from tcc_model.checkpoint import load_checkpoint
from tcc_model.config import merge
from tcc_model.data.format import (
    EpisodeLabels,
    key_events_from_phase_ids,
    load_split,
    write_episode,
    write_manifest,
)
from tcc_model.models import ModelConfig, build_model
from tcc_model.train import DEFAULT_CONFIG, Trainer, TrainingConfig, batch_positions, main
from tcc_model.train.module import TrainModule, compile_embedder, frame_ids

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
PHASES = ["start", "middle", "end"]
SIZE = 48


def write_toy_dataset(root: Path, n_train: int = 4, n_val: int = 3, seed: int = 0) -> Path:
    """Videos of a square sliding across a random background at a random, uneven pace."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split, count in [("train", n_train), ("val", n_val)]:
        for i in range(count):
            length = int(rng.integers(26, 40))
            progress = np.sort(rng.random(length))
            progress = (progress - progress[0]) / (progress[-1] - progress[0])
            frames = np.empty((length, SIZE, SIZE, 3), np.uint8)
            frames[:] = rng.integers(0, 120, 3).astype(np.uint8)
            cx = 6 + progress * (SIZE - 12)
            inside = (np.abs(xx[None] - cx[:, None, None]) < 5) & (np.abs(yy[None] - SIZE / 2) < 5)
            colour = np.stack([np.full(length, 255), 255 * progress, np.zeros(length)], 1)
            frames[inside] = np.repeat(colour.astype(np.uint8), inside.sum((1, 2)), axis=0)
            phase = np.minimum((progress * 3).astype(int), 2)
            labels = EpisodeLabels(
                video="",
                fps=10.0,
                num_frames=length,
                phase_names=PHASES,
                phase_ids=phase.tolist(),
                key_events=key_events_from_phase_ids(phase, PHASES),
            )
            write_episode(root / split, f"ep{i:03d}", frames, labels, video_format="png")
    write_manifest(root, {"name": "toy", "phase_names": PHASES})
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy"))


def small_config(**train) -> dict:
    config = merge(
        TrainingConfig,
        DEFAULT_CONFIG,
        {
            "model": {"image_size": SIZE, "context_stride": 4, "light_width": 16},
            "data": {"num_frames": 8},
            "train": {
                "steps": 4,
                "lr": 1e-3,
                "val_interval": 0,
                "val_batches": 2,
                "progress": False,
                "log_interval": 1,
                **train,
            },
        },
        "test",
    )
    return config


CLI_SMALL = [
    "--no-progress",
    "--set",
    f"model.image_size={SIZE}",
    "model.context_stride=4",
    "model.light_width=16",
    "data.num_frames=8",
    "train.lr=1e-3",
    "train.val_interval=0",
    "train.log_interval=1",
]


# --------------------------------------------------------------------------------------------
# Batch order


def test_batch_positions_visit_every_video_once_per_epoch_across_ranks():
    n, b, world = 7, 2, 2
    keys = [
        k
        for step in range(7)
        for r in range(world)
        for k in batch_positions(step, b, n, 3, r, world)
    ]
    epochs = np.array([e for e, _ in keys])
    videos = np.array([v for _, v in keys])
    for epoch in range(4):
        assert sorted(videos[epochs == epoch]) == list(range(n))
    assert batch_positions(5, b, n, 3, 1, world) == batch_positions(5, b, n, 3, 1, world)
    assert batch_positions(0, b, n, 3) != batch_positions(0, b, n, 4)


# --------------------------------------------------------------------------------------------
# Algorithms


def _algo_batch(b: int, t: int, tcn: bool) -> dict[str, torch.Tensor]:
    s = 2 * t if tcn else t
    steps = torch.sort(torch.randperm(60)[:s].reshape(1, s).repeat(b, 1), dim=1).values
    return {"steps": steps, "seq_len": torch.full((b,), 60), "phase_ids": steps // 20}


@pytest.mark.parametrize("name", ALGOS)
def test_every_algo_gives_a_finite_differentiable_loss(name):
    cfg = AlgoConfig(name=name)
    algo = TrainingAlgo(cfg, embedding_size=16, num_phases=3)
    batch = _algo_batch(3, 10, cfg.uses_tcn_sampling)
    embs = torch.randn(3, batch["steps"].shape[1], 16, requires_grad=True)
    loss, parts = algo(embs, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and embs.grad.abs().sum() > 0
    weights = cfg.loss_weights()
    assert set(parts) == set(weights)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert loss.item() == pytest.approx(sum(weights[k] * parts[k] for k in parts), rel=1e-5)


def test_combination_weights_follow_the_reference():
    assert AlgoConfig(name="tcc+sal+tcn").loss_weights() == pytest.approx(
        {"tcc": 0.33, "sal": 0.33, "tcn": 0.34}
    )
    assert AlgoConfig(name="tcc+tcn", alignment_weight=0.6).loss_weights() == pytest.approx(
        {"tcc": 0.6, "tcn": 0.4}
    )
    assert AlgoConfig(name="tcc+sal", alignment_weight=0.25).loss_weights() == pytest.approx(
        {"tcc": 0.25, "sal": 0.75}
    )
    with pytest.raises(ValueError, match="unknown algo"):
        AlgoConfig(name="simclr")
    with pytest.raises(ValueError, match="at least 2 phases"):
        TrainingAlgo(AlgoConfig(name="supervised"), 16, num_phases=0)


def test_split_even_odd_keeps_one_parity_per_video():
    b, t = 16, 5
    steps = torch.arange(2 * t).repeat(b, 1) + 100 * torch.arange(b)[:, None]
    embs = steps[..., None].float().repeat(1, 1, 3)
    half, half_steps = split_even_odd(embs, steps, torch.Generator().manual_seed(1))
    assert half.shape == (b, t, 3)
    torch.testing.assert_close(half[..., 0], half_steps.float())
    parity = half_steps % 2
    assert bool((parity == parity[:, :1]).all())
    assert 0 < int(parity[:, 0].sum()) < b  # coin flips differ across videos


# --------------------------------------------------------------------------------------------
# Training


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_aligns_videos(toy, tmp_path):
    config = small_config(steps=60, lr=1e-3)
    config["data"]["augment"] = False
    trainer = Trainer(
        config,
        tmp_path,
        train_episodes=load_split(toy, "train"),
        val_episodes=load_split(toy, "val"),
    )
    before = trainer.validate()
    metrics = trainer.train()
    after = trainer.validate()
    assert after["loss"] < before["loss"] - 0.1
    assert after["kendalls_tau"] > 0.7
    assert metrics["val_loss"] == pytest.approx(after["loss"])
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert any((tmp_path / "tb").iterdir())


def test_a_data_worker_process_trains_the_same_run(toy, tmp_path):
    """The recipe's ``data.num_workers: 1`` (batches made on a second core) changes no weight."""
    states = []
    for workers in (0, 1):
        config = small_config(steps=3)
        config["data"]["augment"] = "camera"
        config["data"]["num_workers"] = workers
        trainer = Trainer(config, tmp_path / f"w{workers}", train_episodes=load_split(toy, "train"))
        trainer.train()
        states.append({k: v.clone() for k, v in trainer.module.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_cli_writes_run_and_refuses_to_overwrite(toy, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", f"folder:{toy}", "--out", str(out), "--steps", "2", *CLI_SMALL]
    assert main(args) == 0
    assert (out / "config.yaml").is_file()
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote:")]
    assert len(wrote) == 1 and "loss curve" in wrote[0]
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["model"]["image_size"] == SIZE
    # The run records the command that made it, the commit and the threads (for model cards).
    (launch,) = json.loads((out / "provenance.json").read_text())["launches"]
    assert launch["command"].startswith("python -m tcc_model.train --dataset folder:")
    assert (
        "--steps 2" in launch["command"] and launch["threads"] == ckpt["config"]["train"]["threads"]
    )
    assert launch["commit"] is None or len(launch["commit"]) == 40
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # Resuming with another architecture names the differing key.
    assert main([*args, "--resume", "--set", "model.light_width=8"]) == 2
    assert "light_width" in capsys.readouterr().err


def test_cli_errors(toy, tmp_path, capsys):
    one = tmp_path / "one"
    write_toy_dataset(one, n_train=1, n_val=0)
    assert main(["--dataset", f"folder:{one}", "--out", str(tmp_path / "r1"), *CLI_SMALL]) == 2
    assert "at least 2 videos" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", f"folder:{toy}", "--algo", "simclr"])
    assert main(["--dataset", f"folder:{toy}", "--set", "train.lrr=1"]) == 2
    assert "lrr" in capsys.readouterr().err
    assert main(["--dataset", f"folder:{toy}", "--batch-size", "1"]) == 2
    assert "batch-size" in capsys.readouterr().err
    resnet = ["--dataset", f"folder:{toy}", "--set", "model.encoder=resnet50_conv4c"]
    assert main([*resnet, "--out", str(tmp_path / "r2")]) == 2
    assert "--backbone-weights" in capsys.readouterr().err


def _run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "tcc_model.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_resume_after_kill_reproduces_uninterrupted_training(toy, tmp_path):
    common = [
        "--dataset",
        f"folder:{toy}",
        "--algo",
        "tcc+sal+tcn",
        *CLI_SMALL,
        "train.checkpoint_interval=2",
    ]
    killed = _run_cli([*common, "--out", str(tmp_path / "killed"), "--steps", "100000"])
    marker = tmp_path / "killed" / "checkpoints" / "step_000004.pt"
    deadline = time.time() + 240
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    _, err = killed.communicate()
    assert marker.exists(), f"the run to be killed never reached step 4: {err[-2000:]}"
    reached = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"]
    final = str(reached + 3)

    resumed = _run_cli([*common, "--out", str(tmp_path / "killed"), "--steps", final, "--resume"])
    straight = _run_cli([*common, "--out", str(tmp_path / "straight"), "--steps", final])
    for proc in (resumed, straight):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    a = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == int(final)
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=0, atol=1e-6, msg=key)
    for key, value in b["extra"]["algo"].items():
        torch.testing.assert_close(a["extra"]["algo"][key], value, rtol=0, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(toy, tmp_path):
    steps = 2
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "tcc_model.train",
            "--dataset",
            f"folder:{toy}",
            "--out",
            str(tmp_path / "ddp"),
            "--steps",
            str(steps),
            "--device",
            "cpu",
            *CLI_SMALL,
        ],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")

    # Single process: same init, same per-rank batches, gradients averaged over the two ranks.
    config = small_config(steps=steps, device="cpu")
    config["dataset"] = f"folder:{toy}"
    trainer = Trainer(
        config, tmp_path / "single", train_episodes=load_split(toy, "train"), val_episodes=[]
    )
    for step in range(steps):
        trainer.optimizer.zero_grad()
        for rank in range(2):
            batch = trainer.batch_for(step, rank=rank, world_size=2)
            loss, _ = trainer.loss_for(batch, step, rank=rank)
            (loss / 2).backward()
        trainer.optimizer.step()
    state = trainer.model.state_dict()
    params = {name for name, _ in trainer.model.named_parameters()}
    for key in params:
        torch.testing.assert_close(ddp["model"][key], state[key], rtol=1e-4, atol=1e-6, msg=key)
    assert copy.deepcopy(ddp["config"]["train"]["batch_size"]) == 2


def test_cosine_schedule_warms_up_decays_and_is_applied(toy, tmp_path):
    config = small_config(steps=10, lr_schedule="cosine", warmup_steps=4)
    trainer = Trainer(config, tmp_path, train_episodes=load_split(toy, "train"), val_episodes=[])
    rates = [trainer.lr_at(s) for s in range(10)]
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[4:], rates[5:]))  # strictly decaying after warmup
    assert trainer.lr_at(10) == pytest.approx(0.0, abs=1e-12)
    trainer.train()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(rates[9])


def test_unknown_schedule_is_rejected_with_the_config():
    with pytest.raises(ValueError, match="lr_schedule=step: expected one of 'constant', 'cosine'"):
        small_config(lr_schedule="step")


def test_anomalous_episodes_are_excluded_unless_asked(toy, tmp_path):
    episodes = load_split(toy, "train")
    flagged = copy.deepcopy(episodes)
    flagged[0].labels.anomaly = "drop"
    trainer = Trainer(small_config(), tmp_path / "a", train_episodes=flagged, val_episodes=[])
    assert [e.name for e in trainer.train_episodes] == [e.name for e in episodes[1:]]
    config = small_config()
    config["data"]["exclude_anomalous"] = False
    trainer = Trainer(config, tmp_path / "b", train_episodes=flagged, val_episodes=[])
    assert len(trainer.train_episodes) == len(episodes)
    for e in flagged:
        e.labels.anomaly = "stall"
    with pytest.raises(ValueError, match="exclude_anomalous=false"):
        Trainer(small_config(), tmp_path / "c", train_episodes=flagged, val_episodes=[])


# --------------------------------------------------------------------------------------------
# Speed levers


def _tiny_module(**levers) -> tuple[TrainModule, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, context_frames=2, context_stride=2, light_width=8, **levers)
    algo = TrainingAlgo(AlgoConfig(name="tcc+tcn"), cfg.embedding_size, num_phases=3)
    module = TrainModule(build_model(cfg), algo, 1e-5, distinct_frames=True).train()
    steps = torch.tensor([[2, 3, 6, 7, 9, 10], [1, 3, 4, 5, 8, 9]])
    ids = frame_ids(steps, 2, 2)
    video = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3)))
    batch = {
        "frames": video.to(torch.uint8)[ids],
        "steps": steps,
        "seq_len": torch.tensor([12, 12]),
        "phase_ids": steps // 4,
    }
    return module, batch


def test_cpu_amp_is_bf16_only_with_native_support():
    from tcc_model.train.module import amp_dtype_for, native_bf16

    cpu = torch.device("cpu")
    assert amp_dtype_for(cpu, False) is None
    assert amp_dtype_for(cpu, True) == (torch.bfloat16 if native_bf16(cpu) else None)


@pytest.mark.slow
def test_compiled_step_reproduces_eager_with_dropout():
    """inductor's fallback_random: dropout draws the eager numbers, so loss and grads match."""
    results = []
    for compiled in (False, True):
        module, batch = _tiny_module(dropout=0.5)
        if compiled:
            compile_embedder(module.model)
        torch.manual_seed(3)
        loss, _ = module(batch, torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), module.model.head.fcs[1].weight.grad.clone()))
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-3, atol=1e-5)
