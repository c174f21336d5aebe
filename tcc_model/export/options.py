"""What an export is asked to do (ExportOptions) and what it is given (ExportInputs).

No torch import here: the CLI builds these before loading anything heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from tcc_model.errors import UserError

DEFAULT_TOLERANCE_REL = 1e-3
#: The opset the dynamo exporter writes natively (lower ones are converted, with warnings).
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
ENCODER_FILE, HEAD_FILE, WEIGHTS_FILE = "encoder.onnx", "head.onnx", "model.safetensors"
ENCODER_INT8_FILE = "encoder_int8.onnx"
ENCODER_INPUT, ENCODER_OUTPUT = "frames", "features"
HEAD_INPUT, HEAD_OUTPUT = "context_features", "embeddings"


class ExportError(UserError):
    """The model cannot be exported as asked (missing dependency, failed parity check, ...)."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export: graph format, optional variants, parity tolerance, overwrite policy."""

    opset: int = DEFAULT_OPSET  # ONNX opset of both graphs
    exporter: str = "dynamo"  # torch ONNX exporter: "dynamo" (torch.export) or "torchscript"
    quantize_int8: bool = False  # also write encoder_int8.onnx (ONNX Runtime static int8)
    tensorrt: bool = False  # also build TensorRT plans (needs the tensorrt package and a GPU)
    fp16: bool = False  # FP16 TensorRT plans (only with tensorrt)
    tolerance_rel: float = DEFAULT_TOLERANCE_REL  # max |ONNX - torch| / max |torch embedding|
    overwrite: bool = False  # replace an existing bundle folder at the destination

    def check(self) -> None:
        """Raise :class:`ExportError` for contradictory or out-of-range options."""
        if self.fp16 and not self.tensorrt:
            raise ExportError("--fp16 only applies to TensorRT engines; add --tensorrt")
        if self.exporter not in EXPORTERS:
            raise ExportError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if not self.tolerance_rel > 0:
            raise ExportError(f"--tolerance must be > 0, got {self.tolerance_rel}")
        if not 7 <= self.opset <= 23:
            raise ExportError(f"--opset must be between 7 and 23, got {self.opset}")


@dataclass
class ExportInputs:
    """What goes into the bundle besides the model: metadata and frames for the checks."""

    model_config: dict[str, Any] | None = None  # default: model.cfg.to_dict()
    phase_names: Sequence[str] | None = None
    training_config: dict[str, Any] | None = None  # recorded under "training"
    check_frames: np.ndarray | None = None  # RGB uint8 sequence; default: synthetic frames
    check_source: str = "synthetic"  # where check_frames come from (recorded)
    calibration_frames: np.ndarray | None = None  # int8 calibration input; default: check frames
    val_videos: Sequence[np.ndarray] | None = field(default=None, repr=False)  # int8 tau


def split_legacy_kwargs(kwargs: dict[str, Any]) -> tuple[ExportOptions, ExportInputs]:
    """Options and inputs from the keyword arguments of the former ``export_bundle`` signature."""
    option_names = {f.name for f in fields(ExportOptions)}
    input_names = {f.name for f in fields(ExportInputs)}
    unknown = sorted(set(kwargs) - option_names - input_names)
    if unknown:
        raise TypeError(f"export_bundle() got unexpected keyword arguments {unknown}")
    options = ExportOptions(**{k: v for k, v in kwargs.items() if k in option_names})
    inputs = ExportInputs(**{k: v for k, v in kwargs.items() if k in input_names})
    return options, inputs
