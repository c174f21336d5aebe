"""Clip sampling: shapes, step rules, context frames, TCN positives, augmentation, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tcc_model.data.format import DatasetError, EpisodeLabels, load_split, write_episode
from tcc_model.data.sampling import ClipSampler, FrameCache, VideoClipDataset, augment_clip


def _index_frames(n: int, size: int = 8) -> np.ndarray:
    """Frame t has every pixel = t: gathered frames reveal their source index exactly."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    frames[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    return frames


@pytest.fixture
def episodes(tmp_path: Path):
    lengths = {"a": 40, "b": 25, "c": 12}
    for name, n in lengths.items():
        ids = (np.arange(n) * 3 // n).tolist()
        labels = EpisodeLabels(
            video="", fps=10.0, num_frames=n, phase_names=["p0", "p1", "p2"], phase_ids=ids
        )
        write_episode(tmp_path / "train", name, _index_frames(n), labels, video_format="png")
    return load_split(tmp_path, "train")


@pytest.mark.parametrize("seq_len", [2, 5, 21, 100])
def test_offset_uniform_rules(seq_len: int) -> None:
    sampler = ClipSampler(num_frames=20)
    rng = np.random.default_rng(1)
    for _ in range(20):
        steps = sampler.sample(seq_len, rng)
        assert steps.shape == (20,) and steps.dtype == np.int64
        if 20 <= seq_len - 1:  # distinct, sorted, never frame 0
            assert np.all(np.diff(steps) > 0) and steps.min() >= 1 and steps.max() < seq_len
        else:  # too short: 0..T-1 clamped to the last frame
            assert steps.tolist() == np.minimum(np.arange(20), seq_len - 1).tolist()


def test_offset_uniform_covers_all_frames() -> None:
    sampler = ClipSampler(num_frames=3)
    rng = np.random.default_rng(0)
    seen = np.concatenate([sampler.sample(10, rng) for _ in range(200)])
    assert set(seen.tolist()) == set(range(1, 10))


def test_stride_sampling() -> None:
    sampler = ClipSampler(num_frames=4, sampling="stride", stride=16)
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(50):
        steps = sampler.sample(100, rng)
        assert np.all(np.diff(steps) == 16)
        offsets.add(int(steps[0]))
    assert offsets <= set(range(0, 100 - 64)) and len(offsets) > 5
    short = sampler.sample(20, rng)  # offset 0, clamped to the last frame
    assert short.tolist() == [0, 16, 19, 19]


def test_tcn_positives_interleaved_and_before_anchor() -> None:
    sampler = ClipSampler(num_frames=6, tcn_positives=True)
    rng = np.random.default_rng(3)
    for _ in range(50):
        steps = sampler.sample(60, rng)
        positives, anchors = steps[0::2], steps[1::2]
        assert steps.shape == (12,)
        assert np.all(np.diff(anchors) > 0)
        gap = anchors - positives
        assert np.all((gap >= 1) & (gap <= 5) | (positives == 0))


def test_item_shapes_context_and_labels(episodes) -> None:
    data = VideoClipDataset(
        episodes, num_frames=5, context_frames=3, context_stride=4, augment=False
    )
    item = data[0]
    assert item["frames"].shape == (15, 8, 8, 3) and item["frames"].dtype == torch.uint8
    steps = item["steps"]
    assert steps.shape == (5,) and steps.dtype == torch.long
    assert int(item["seq_len"]) == 40 and int(item["video_index"]) == 0
    gathered = item["frames"][:, 0, 0, 0].view(5, 3).long()  # pixel value = source frame index
    expected = torch.stack([(steps - 8).clamp(min=0), (steps - 4).clamp(min=0), steps], dim=1)
    assert torch.equal(gathered, expected)  # oldest first, main frame last, clamped at 0
    assert torch.equal(item["phase_ids"], steps * 3 // 40)


def test_tcn_item(episodes) -> None:
    data = VideoClipDataset(episodes, num_frames=4, tcn_positives=True, augment=False)
    item = data[1]
    assert item["frames"].shape == (16, 8, 8, 3) and item["steps"].shape == (8,)
    main = item["frames"][1::2, 0, 0, 0].long()  # second context frame of each step
    assert torch.equal(main, item["steps"])


def test_unlabelled_phase_ids_are_minus_one(episodes) -> None:
    episodes[2].labels.phase_ids = None
    data = VideoClipDataset(episodes, num_frames=4, augment=False)
    assert data[2]["phase_ids"].tolist() == [-1] * 4


def test_deterministic_per_seed_epoch_index(episodes) -> None:
    data = VideoClipDataset(episodes, num_frames=6, seed=7)
    first = data[0]
    again = VideoClipDataset(episodes, num_frames=6, seed=7)[0]
    assert torch.equal(first["steps"], again["steps"])
    assert torch.equal(first["frames"], again["frames"])
    data.set_epoch(1)
    assert not torch.equal(data[0]["steps"], first["steps"])
    other_seed = VideoClipDataset(episodes, num_frames=6, seed=8)[0]
    assert not torch.equal(other_seed["steps"], first["steps"])


def test_dataloader_workers_reproduce_main_process(episodes) -> None:
    data = VideoClipDataset(episodes, num_frames=4, seed=2)
    data.set_epoch(3)
    direct = [data[i]["steps"] for i in range(len(data))]
    loader = DataLoader(data, batch_size=3, num_workers=2, shuffle=False)
    (batch,) = list(loader)
    assert batch["frames"].shape == (3, 8, 8, 8, 3)
    assert torch.equal(batch["steps"], torch.stack(direct))


def test_augmentation_is_video_consistent() -> None:
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), np.uint8))
    # identical frames must stay identical after augmentation (same params for the whole clip)
    clip = torch.cat([frames[:1]] * 6)
    out = augment_clip(clip, np.random.default_rng(5))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255
    assert torch.equal(out, out[:1].expand_as(out))
    flips = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        aug = augment_clip(frames, rng)
        # undo brightness/contrast is impossible, but a flip is detectable via correlation
        direct = np.corrcoef(aug.flatten(), frames.float().flatten())[0, 1]
        mirrored = np.corrcoef(aug.flatten(), frames.flip(2).float().flatten())[0, 1]
        flips += mirrored > direct
    assert 8 < flips < 32  # p = 0.5


def test_augmentation_ranges() -> None:
    grey = torch.full((2, 4, 4, 3), 100, dtype=torch.uint8)
    shifts = [float(augment_clip(grey, np.random.default_rng(s)).mean()) - 100 for s in range(200)]
    assert max(shifts) <= 32 and min(shifts) >= -32 and max(shifts) > 25 and min(shifts) < -25


def test_frame_cache_decodes_once(episodes, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FrameCache(image_size=4)
    calls = []
    original = type(episodes[0]).load_frames

    def counting(self):
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(type(episodes[0]), "load_frames", counting)
    data = VideoClipDataset(episodes, num_frames=3, cache=cache, augment=False)
    for _ in range(3):
        assert data[0]["frames"].shape == (6, 4, 4, 3)
    assert calls == ["a"] and len(cache) == 1


def test_too_few_videos(episodes) -> None:
    with pytest.raises(DatasetError, match="at least 2 videos"):
        VideoClipDataset(episodes[:1])


def test_bad_sampling_name() -> None:
    with pytest.raises(ValueError, match="offset_uniform"):
        ClipSampler(sampling="random")


def test_camera_augmentation_in_the_dataset(episodes) -> None:
    plain = VideoClipDataset(episodes, num_frames=4, augment=False, seed=3)
    camera = VideoClipDataset(episodes, num_frames=4, augment="camera", seed=3)
    a, b = plain[0], camera[0]
    assert torch.equal(a["steps"], b["steps"])  # augmentation draws after the clip's steps
    assert b["frames"].dtype == torch.float32 and b["frames"].shape == a["frames"].shape
    assert 0.0 <= float(b["frames"].min()) and float(b["frames"].max()) <= 255.0
    assert not torch.allclose(b["frames"], a["frames"].float())
    assert torch.equal(camera[0]["frames"], b["frames"])  # same (seed, epoch, index): same clip


def test_speed_augmentation_plays_the_clip_faster_and_is_off_by_default(episodes) -> None:
    args = {"num_frames": 5, "context_frames": 3, "context_stride": 4, "augment": False}
    plain = VideoClipDataset(episodes, seed=3, **args)
    off = VideoClipDataset(episodes, seed=3, max_speedup=1.0, **args)
    for i in range(3):  # off: the very same items (the random stream is untouched)
        assert all(torch.equal(plain[i][k], off[i][k]) for k in ("frames", "steps"))
    fast = VideoClipDataset(episodes, seed=3, max_speedup=2.0, **args)
    speeds = []
    for epoch in range(8):
        fast.set_epoch(epoch)
        item = fast[0]  # 40 frames
        seq_len, steps = int(item["seq_len"]), item["steps"].long()
        assert 20 <= seq_len <= 40 and int(steps.max()) < seq_len  # steps in the faster time
        source = item["frames"][:, 0, 0, 0].view(5, 3).long()  # pixel value = video frame
        speed = fast.rng_for(0).uniform(1.0, 2.0)  # the clip's speed: the item's first draw
        assert seq_len == int(np.ceil(40 / speed))
        expected = torch.floor(steps.double() * speed).long().clamp(max=39)
        assert torch.equal(source[:, 2], expected)  # main frame: floor(step x speed)
        gaps = source[:, 2] - source[:, 1]  # context stride 4 steps = ~4 x speed video frames
        assert bool(((gaps >= 4) | (steps < 4)).all())
        assert torch.equal(item["phase_ids"], source[:, 2] * 3 // 40)  # labels of the shown frame
        speeds.append(speed)
    assert max(speeds) > 1.3  # the speed is drawn per clip
    with pytest.raises(ValueError, match="max_speedup"):
        VideoClipDataset(episodes, max_speedup=0.5, **args)
