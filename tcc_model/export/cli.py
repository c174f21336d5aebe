"""``python -m tcc_model.export``: a training checkpoint becomes a deployment bundle.

``python -m tcc_model.export --checkpoint CKPT --out BUNDLE_DIR [--dataset NAME] [--quantize-int8]
[--int8-calib N] [--tensorrt] [--fp16] [--opset 18]``

Nothing heavy is imported before the arguments are checked, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.cli import add_checkpoint_arg, check_checkpoint, entry_point, print_written, stage
from tcc_model.errors import ConfigError
from tcc_model.export.options import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE_REL,
    EXPORTERS,
    ExportInputs,
    ExportOptions,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tcc_model.export",
        description="Export a trained model to a deployment bundle (ONNX, optional int8 and "
        "TensorRT), checked against PyTorch.",
    )
    add_checkpoint_arg(p)
    p.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    p.add_argument("--dataset", help="dataset NAME for real check/calibration frames and val tau")
    p.add_argument(
        "--quantize-int8",
        action="store_true",
        help="also write encoder_int8.onnx (ORT static int8) and its accuracy cost",
    )
    p.add_argument(
        "--int8-calib", type=int, default=64, metavar="N", help="int8 calibration frames (64)"
    )
    p.add_argument("--tensorrt", action="store_true", help="build TensorRT engines (CUDA GPU)")
    p.add_argument("--fp16", action="store_true", help="FP16 TensorRT engines")
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch ONNX exporter (default dynamo; torchscript is the legacy one)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_REL,
        help="max ONNX-vs-PyTorch |diff| relative to max |embedding| (default 1e-3)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _inputs(args: argparse.Namespace, model: Any, ckpt: dict[str, Any]) -> ExportInputs:
    """Model config, phase names, training record and (with --dataset) real frames."""
    config = ckpt.get("config") or {}
    cfg = model.cfg.to_dict() if hasattr(getattr(model, "cfg", None), "to_dict") else None
    inputs = ExportInputs(model_config=cfg or config.get("model"))
    dataset_phases = None
    if args.dataset:
        from tcc_model.export.frames import load_dataset_frames

        with stage(f"loading check and calibration frames of {args.dataset}"):
            check, calib, val_videos, dataset_phases = load_dataset_frames(
                args.dataset,
                int(inputs.model_config["image_size"]),
                num_check_frames=64,
                num_calib_frames=args.int8_calib,
            )
        inputs.check_frames, inputs.calibration_frames, inputs.val_videos = check, calib, val_videos
        inputs.check_source = f"dataset:{args.dataset}"
    inputs.phase_names = (
        config.get("phase_names") or (config.get("data") or {}).get("phase_names") or dataset_phases
    )
    training = {key: value for key, value in config.items() if key != "model"}
    training["step"] = ckpt.get("step")
    training["checkpoint"] = str(args.checkpoint)
    inputs.training_config = training
    return inputs


def _run(argv: Sequence[str] | None = None) -> int:
    """The command; user errors are raised (see :func:`main`)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.int8_calib < 1:
        raise ConfigError(f"--int8-calib must be >= 1, got {args.int8_calib}")
    options = ExportOptions(
        opset=args.opset,
        exporter=args.exporter,
        quantize_int8=args.quantize_int8,
        tensorrt=args.tensorrt,
        fp16=args.fp16,
        tolerance_rel=args.tolerance,
        overwrite=args.overwrite,
    )
    options.check()
    checkpoint = check_checkpoint(args.checkpoint)
    with stage(f"loading {checkpoint}"):
        from tcc_model.checkpoint import load_model
        from tcc_model.export.writer import export_bundle

        model, ckpt = load_model(checkpoint, device="cpu")
    manifest = export_bundle(model, args.out, options, _inputs(args, model, ckpt), progress=True)
    ver = manifest["verification"]
    print(
        f"bundle_id {manifest['bundle_id'][:12]}: ONNX vs PyTorch max |diff| "
        f"{ver['max_abs_diff_embeddings']:.3g} <= {ver['tolerance_abs']:.3g} on {ver['frames']}"
    )
    if "int8" in manifest["variants"]:
        print(f"int8 accuracy cost: {manifest['variants']['int8']['accuracy']}")
    print_written({"bundle": args.out})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with one ``error:`` line on bad input)."""
    from tcc_model.cli import run_main

    return run_main(_run, argv)


if __name__ == "__main__":
    entry_point(_run)
