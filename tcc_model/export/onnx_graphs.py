"""PyTorch side of the export: the encoder and head as ONNX graphs, and their reference outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tcc_model.preprocess import context_indices


class EncoderGraph(nn.Module):
    """``frames`` uint8 ``[N, S, S, 3]`` -> ``features`` ``[N, C, h, w]`` (normalising inside)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)


class HeadGraph(nn.Module):
    """``context_features`` ``[N, k, C, h, w]`` -> ``embeddings`` ``[N, D]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, context_features: torch.Tensor) -> torch.Tensor:
        return self.head(context_features)


@torch.inference_mode()
def torch_embed_frames(
    model: nn.Module, frames: np.ndarray, k: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch features ``[N, C, h, w]`` and causal-context embeddings ``[N, D]`` of a sequence."""
    feats = model.encoder(torch.from_numpy(np.ascontiguousarray(frames)))
    idx = torch.from_numpy(context_indices(np.arange(len(frames)), k, stride))
    emb = model.head(feats[idx])
    return feats.float().numpy(), emb.float().numpy()


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    opset: int,
    exporter: str,
) -> None:
    """Export with dynamic batch; ``exporter``: ``dynamo`` (torch.export) or ``torchscript``."""
    module = module.eval()
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes={input_name: {0: batch}},  # forward() argument named like the input
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            )
