"""Per-frame embeddings of whole videos: every frame with its causal context.

Each frame is encoded once (per-frame features are shared by the contexts that use them); the
head then embeds frame ``t`` from the features of ``context_indices(t, k, stride)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tcc_model.models import Embedder
from tcc_model.preprocess import context_indices


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def embed_frames(
    model: Embedder,
    frames: np.ndarray,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embeddings ``[N, D]`` (float32) of every frame of one video ``frames [N, H, W, 3]`` uint8.

    Runs in eval mode without gradients (the model's train/eval mode is restored afterwards).
    ``device`` defaults to the model's device.
    """
    frames = np.asarray(frames)
    size = model.cfg.image_size
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [N, H, W, 3], got shape {tuple(frames.shape)}")
    if frames.shape[1:3] != (size, size):
        raise ValueError(
            f"frames are {frames.shape[2]}x{frames.shape[1]} but the model expects {size}x{size}; "
            "resize them with tcc_model.preprocess.resize_frames"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_frames = len(frames)
    if num_frames == 0:
        return np.zeros((0, model.cfg.embedding_size), dtype=np.float32)

    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        features = torch.cat(
            [
                model.encode(
                    torch.from_numpy(np.require(frames[i : i + batch_size], requirements="W")).to(
                        device
                    )
                )
                for i in range(0, num_frames, batch_size)
            ]
        )
        ctx = torch.from_numpy(
            context_indices(
                np.arange(num_frames), model.cfg.context_frames, model.cfg.context_stride
            )
        ).to(device)
        embs = torch.cat(
            [
                model.embed(features[ctx[i : i + batch_size]])
                for i in range(0, num_frames, batch_size)
            ]
        )
    finally:
        model.train(was_training)
    return embs.float().cpu().numpy()


def embed_episodes(
    model: Embedder,
    episodes: Sequence,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Per-frame embeddings of every episode (``Episode.load_frames()``), one ``[N_i, D]`` each.

    Frames not at the model's image size are resized with the shared preprocessing.
    """
    from tcc_model.preprocess import resize_frames

    out = []
    for episode in tqdm(episodes, desc="embed", unit="video", disable=not progress):
        frames = resize_frames(episode.load_frames(), model.cfg.image_size)
        out.append(embed_frames(model, frames, batch_size=batch_size, device=device))
    return out
