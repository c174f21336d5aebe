"""Per-frame encoders: ``frames [N, H, W, 3]`` RGB 0..255 -> ``features [N, C, h, w]``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tcc_model.preprocess import Normalize


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _Encoder(nn.Module):
    """``Normalize`` then a conv ``trunk`` (subclasses set ``trunk``, ``out_channels``)."""

    out_channels: int
    stride: int

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(frames))


class LightEncoder(_Encoder):
    """Small strided conv net for real-time CPU inference (~39 MFLOPs per frame at 112², width 32).

    ``stem='conv'``: four stride-2 3×3 conv/BN/ReLU stages plus one stride-1 stage at ``S/8``.
    ``stem='patchify'``: the first two stages (``S/2``, ``S/4``) become one 4×4 stride-4 conv
    (ConvNeXt's stem): on a CPU the 3- and 16-channel convolutions and the BatchNorm/ReLU passes
    at ``S/2`` run far below the GEMM peak, and the patchify stem is one dense GEMM at ``S/4``.
    Both give ``[N, S, S, 3] -> [N, 4*width, S/16, S/16]`` (``[N, 128, 7, 7]`` at 112²).
    """

    def __init__(self, mean, std, width: int = 32, stem: str = "conv") -> None:
        super().__init__(mean, std)
        w = width
        if stem == "patchify":
            first = [
                nn.Conv2d(3, w, 4, stride=4, bias=False),  # S/4
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
        else:
            first = [
                *_conv_bn_relu(3, w // 2, 3, stride=2),  # S/2
                *_conv_bn_relu(w // 2, w, 3, stride=2),  # S/4
            ]
        self.trunk = nn.Sequential(
            *first,
            *_conv_bn_relu(w, 2 * w, 3, stride=2),  # S/8
            *_conv_bn_relu(2 * w, 2 * w, 3),
            *_conv_bn_relu(2 * w, 4 * w, 3, stride=2),  # S/16
        )
        self.out_channels = 4 * w
        self.stride = 16


class VGGMEncoder(_Encoder):
    """The paper's VGG-M-like network trained from scratch (``vggm_net`` up to ``conv4``).

    ``[N, 224, 224, 3] -> [N, 512, 14, 14]``.
    """

    def __init__(self, mean, std) -> None:
        super().__init__(mean, std)

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return _conv_bn_relu(c_in, c_out, 3) + _conv_bn_relu(c_out, c_out, 3)

        self.trunk = nn.Sequential(
            nn.ZeroPad2d(3),
            nn.Conv2d(3, 64, 7, stride=2, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ZeroPad2d(1),
            nn.MaxPool2d(3, stride=2),
            *block(64, 128),
            nn.MaxPool2d(2, stride=2),
            *block(128, 256),
            nn.MaxPool2d(2, stride=2),
            *block(256, 512),
        )
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.out_channels = 512
        self.stride = 16


class ResNet50Conv4cEncoder(_Encoder):
    """torchvision ResNet-50 truncated after ``layer3[:3]`` (the paper's ``conv4c``).

    ``[N, 224, 224, 3] -> [N, 1024, 14, 14]``. The reference uses Keras ResNet50-V2; this is
    torchvision's V1.5, the ImageNet weights of which are loaded from a local file only.
    """

    def __init__(self, mean, std, weights_path: str | None = None) -> None:
        super().__init__(mean, std)
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3[:3]
        )
        self.out_channels = 1024
        self.stride = 16
        if weights_path:
            self.load_imagenet_weights(weights_path)

    def load_imagenet_weights(self, path: str | Path) -> None:
        """Load a torchvision ``resnet50`` ImageNet state dict from a local file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone_weights file {str(path)!r} does not exist; pass the path of a local "
                "torchvision resnet50 state dict (e.g. resnet50-0676ba61.pth) with "
                "--backbone-weights, or use the 'vggm'/'light' encoder (nothing is downloaded)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ValueError(
                f"backbone_weights {str(path)!r} is not a torch state dict: {exc}"
            ) from exc
        if (
            isinstance(state, dict)
            and "state_dict" in state
            and isinstance(state["state_dict"], dict)
        ):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"backbone_weights {str(path)!r} does not hold a state dict")
        names = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            prefix, _, rest = key.partition(".")
            if prefix not in names:
                continue
            if prefix == "layer3" and int(rest.split(".")[0]) >= 3:
                continue
            mapped[f"{names[prefix]}.{rest}"] = value
        expected = self.trunk.state_dict()
        missing = sorted(set(expected) - set(mapped))
        bad_shape = sorted(
            k for k in set(expected) & set(mapped) if expected[k].shape != mapped[k].shape
        )
        if missing or bad_shape:
            raise ValueError(
                f"backbone_weights {str(path)!r} does not match torchvision resnet50: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"shape mismatch {bad_shape[:5]}"
            )
        self.trunk.load_state_dict(mapped)
