"""Encoders, heads, Embedder, checkpoints and per-frame embedding extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tcc_model.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    load_model,
    save_checkpoint,
    set_rng_state,
)
from tcc_model.embed import embed_frames
from tcc_model.models import ModelConfig, build_model, distinct_positions
from tcc_model.preprocess import context_indices

torch.set_num_threads(1)


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoder", "head", "size", "channels", "grid"),
    [
        ("light", "light", 64, 128, 4),
        ("light-patchify", "light", 64, 128, 4),
        ("light", "paper_conv3d", 64, 128, 4),
        ("vggm", "light", 64, 512, 4),
        ("vggm", "paper_conv3d", 64, 512, 4),
        ("resnet50_conv4c", "paper_conv3d", 64, 1024, 4),
    ],
)
def test_shapes_every_encoder_and_head(encoder, head, size, channels, grid):
    encoder, _, stem = encoder.partition("-")
    cfg = ModelConfig(
        encoder=encoder, head=head, image_size=size, context_frames=2, stem=stem or "conv"
    )
    model = build_model(cfg).eval()
    frames = torch.from_numpy(_frames(2 * 3 * 2, size)).reshape(2, 6, size, size, 3)
    with torch.no_grad():
        feats = model.encode(frames[0])
        embs = model(frames)
        ctx = model.embed(feats.reshape(3, 2, *feats.shape[1:]))
    assert feats.shape == (6, channels, grid, grid)
    assert embs.shape == (2, 3, 128)
    torch.testing.assert_close(ctx, embs[0])


def test_uint8_and_float_inputs_agree():
    model = build_model(ModelConfig(image_size=64)).eval()
    frames = torch.from_numpy(_frames(4, 64)).reshape(1, 4, 64, 64, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), model(frames.float()))


def test_context_frames_change_the_embedding():
    model = build_model(ModelConfig(image_size=64)).eval()
    frames = torch.from_numpy(_frames(3, 64))
    pair_a = torch.stack([frames[0], frames[2]])[None]
    pair_b = torch.stack([frames[1], frames[2]])[None]
    with torch.no_grad():
        assert not torch.allclose(model(pair_a), model(pair_b))


def test_model_config_round_trip_and_validation():
    cfg = ModelConfig(encoder="vggm", head="paper_conv3d", image_size=96, mean=(0.4, 0.5, 0.6))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(encoder="resnet18")
    with pytest.raises(ValueError, match="model: unknown key widht; valid keys: encoder"):
        ModelConfig.from_dict({"encoder": "light", "widht": 3})


@pytest.mark.parametrize("mode", ["only_bn", "all", "none"])
def test_resnet_train_base(mode):
    model = build_model(ModelConfig(encoder="resnet50_conv4c", head="light", train_base=mode))
    enc = model.encoder
    bn = [p for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    conv = [p for m in enc.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters()]
    assert all(p.requires_grad == (mode != "none") for p in bn)
    assert all(p.requires_grad == (mode == "all") for p in conv)
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert enc.training == (mode != "none")
    assert model.head.training


def test_resnet_backbone_weights_from_local_file(tmp_path):
    from torchvision.models import resnet50

    reference = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(encoder="resnet50_conv4c", backbone_weights=str(path)))
    torch.testing.assert_close(model.encoder.trunk[0].weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.encoder.trunk[6][2].conv3.weight, reference.layer3[2].conv3.weight
    )

    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        build_model(ModelConfig(encoder="resnet50_conv4c", backbone_weights=str(tmp_path / "no")))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="does not match torchvision resnet50"):
        build_model(ModelConfig(encoder="resnet50_conv4c", backbone_weights=str(bad)))


def test_embed_frames_matches_forward_on_explicit_contexts():
    cfg = ModelConfig(image_size=64, context_frames=3, context_stride=4)
    model = build_model(cfg)
    model.train()  # embed_frames must switch to eval and restore the mode
    frames = _frames(23, 64, seed=1)
    embs = embed_frames(model, frames, batch_size=5)
    assert model.training
    model.eval()
    idx = context_indices(np.arange(23), 3, 4).reshape(-1)  # [23*3]
    with torch.no_grad():
        expected = model(torch.from_numpy(frames[idx])[None])[0].numpy()
    assert embs.shape == (23, 128) and embs.dtype == np.float32
    np.testing.assert_allclose(embs, expected, rtol=1e-4, atol=1e-5)


def test_embed_frames_rejects_wrong_size():
    model = build_model(ModelConfig(image_size=64))
    with pytest.raises(ValueError, match="resize_frames"):
        embed_frames(model, _frames(3, 32))


def _save(path, model, step=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.from_numpy(_frames(4, 64)).reshape(1, 4, 64, 64, 3)).sum().backward()
    opt.step()
    save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        step=step,
        config={"model": model.cfg.to_dict()},
        extra={"note": "x"},
    )
    return opt


def test_checkpoint_round_trip(tmp_path):
    model = build_model(ModelConfig(image_size=64))
    opt = _save(tmp_path / "ck.pt", model, step=7)
    assert not list(tmp_path.glob("*.tmp*"))
    loaded, ckpt = load_model(tmp_path / "ck.pt")
    assert ckpt["step"] == 7 and ckpt["extra"] == {"note": "x"}
    assert not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer"])
    torch.testing.assert_close(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )


def test_rng_state_round_trip():
    import random

    state = get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a tcc_ros checkpoint"):
        load_checkpoint(plain)

    model = build_model(ModelConfig(image_size=64))
    _save(tmp_path / "ck.pt", model)
    ckpt = torch.load(tmp_path / "ck.pt", weights_only=True)
    ckpt["config"]["model"]["light_width"] = 16  # another architecture, same keys
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*encoder\.trunk"):
        load_model(tmp_path / "other.pt")


@pytest.mark.slow
def test_light_model_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build_model(ModelConfig(image_size=64)).eval()
    frames = torch.from_numpy(_frames(2, 64))
    with torch.no_grad():
        feats = model.encode(frames)
        context = torch.stack([feats, feats.flip(0)], dim=1)
        expected = model.embed(context).numpy()
    batch = {0: torch.export.Dim("n")}
    torch.onnx.export(
        model.encoder, (frames,), tmp_path / "enc.onnx", dynamo=True, dynamic_shapes=(batch,)
    )
    torch.onnx.export(
        model.head, (context,), tmp_path / "head.onnx", dynamo=True, dynamic_shapes=(batch,)
    )
    enc = ort.InferenceSession(str(tmp_path / "enc.onnx"))
    head = ort.InferenceSession(str(tmp_path / "head.onnx"))
    got_feats = enc.run(None, {enc.get_inputs()[0].name: frames.numpy()})[0]
    np.testing.assert_allclose(got_feats, feats.numpy(), atol=1e-4)
    got = head.run(None, {head.get_inputs()[0].name: context.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_distinct_positions_cover_each_frame_once():
    ids = torch.tensor([[0, 0, 3, 1, 3, 0], [2, 2, 2, 5, 0, 5]])
    inverse, first = distinct_positions(ids)
    flat = (ids + 10 * torch.arange(2)[:, None]).reshape(-1)
    assert len(first) == 3 + 3
    torch.testing.assert_close(flat[first][inverse], flat)
    assert sorted(flat[first].tolist()) == sorted(set(flat.tolist()))


@pytest.mark.parametrize("stem", ["conv", "patchify"])
def test_encoding_distinct_frames_once_gives_the_same_embeddings(stem):
    """Context windows and TCN positives repeat frames; each distinct one is encoded once."""
    cfg = ModelConfig(image_size=64, context_frames=3, context_stride=2, light_width=8, stem=stem)
    model = build_model(cfg)
    video = torch.from_numpy(_frames(12, 64))
    steps = torch.tensor([[1, 2, 3, 5], [0, 4, 4, 6]])
    ids = torch.from_numpy(context_indices(steps.numpy(), 3, 2)).reshape(2, -1)
    frames = video[ids]  # [2, 12, 64, 64, 3], repeated frames included
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(frames, ids), model(frames), rtol=1e-5, atol=1e-5)
    grads = []  # the gradients agree too (eval mode: BatchNorm uses its running statistics)
    for frame_ids in (ids, None):
        model.zero_grad()
        model(frames, frame_ids).square().sum().backward()
        grads.append(model.encoder.trunk[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)
