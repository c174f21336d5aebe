"""One-command check of the CUDA path: train, resume, compile, torchrun, export, parity.

    bash benchmarks/gpu_check.sh                      # on a CUDA machine; report in $OUT
    python3 benchmarks/gpu_check.py --device cpu --quick --out DIR   # tiny CPU run (a test)

Runs with a plain ``python3`` that has torch, onnx, onnxruntime, opencv, pyyaml, tensorboard,
scipy and scikit-learn (no PyAV, MuJoCo, TensorRT or ROS) from the repository root. Trains on
the small JPEG frame-folder dataset carried with the tree (``test/data/gpu_check_frames``),
always through the project's own command lines (``python -m tcc_model.train`` / ``.export``)
so it checks what users run. Stages, in order:

``env`` (GPU, driver, torch, CUDA, packages) · ``gemm_peak`` (timed bf16 matrix product: the
peak the other numbers are a fraction of) · ``paper_train`` (ResNet-50 to conv4c without
downloaded weights + the 3-D conv head, 224², bf16 AMP) · ``light_train`` (the real-time
model) · ``export`` (the CUDA-trained paper checkpoint to a bundle) · ``parity`` (ONNX Runtime
vs torch on CPU, and vs the model on the training device) · ``resume`` (``--resume`` of the paper
run; a light run split in two halves against the straight one) · ``torchrun`` (a 1-process
launch: NCCL on CUDA, gloo on CPU) · ``compile`` (``--compile`` of the light model) ·
``profile`` (FLOPs per clip, model-only step time, top kernels) · ``paper_compile``.

Every stage is timed; a failure is recorded and the next stage runs. The JSON and Markdown
reports are rewritten after every stage, so a run cut short keeps what it measured. Stages
that would start after ``--budget-s`` are recorded as skipped. Exit status 1 when a stage failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(HERE), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gpu_check_measure as measure  # noqa: E402
import gpu_check_report as report  # noqa: E402
import gpu_check_stages as stages  # noqa: E402
from gpu_check_common import Check, Settings, StageError  # noqa: E402

DEFAULT_DATA = REPO / "test" / "data" / "gpu_check_frames"

STAGES: dict[str, Callable[[Check], dict]] = {
    "env": measure.environment,
    "gemm_peak": measure.gemm_peak,
    "paper_train": stages.paper_train,
    "light_train": stages.light_train,
    "export": stages.export,
    "parity": measure.parity,
    "resume": stages.resume,
    "torchrun": stages.torchrun,
    "compile": stages.compile_light,
    "profile": measure.profile,
    "paper_compile": stages.compile_paper,
}

#: Seconds of budget a stage needs to be started (default ``Settings.min_stage_s``).
STAGE_MIN_S = {"export": 60.0, "compile": 60.0, "paper_compile": 150.0}

#: Settings of the full check on a GPU (one device call of at most 8 minutes).
GPU_SETTINGS = Settings()
#: Tiny sizes for the CPU run of the test suite.
QUICK_SETTINGS = Settings(
    paper_steps=2,
    paper_frames=2,
    paper_size=32,
    paper_head_channels=32,
    paper_encoder="light",
    light_steps=4,
    light_batch=2,
    light_frames=4,
    resume_steps=0,
    torchrun_steps=2,
    compile_steps=2,
    workers=0,
    gemm_size=256,
    profile_iters=2,
    parity_frames=6,
    budget_s=600.0,
)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every size has a GPU default and a ``--quick`` (CPU test) default."""
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    p.add_argument("--out", default=None, help="report folder (default $OUT, else runs/gpu_check)")
    p.add_argument(
        "--work", default=None, help="run folders, emptied first (default TMP/gpu_check_work)"
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="frame-folder dataset")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument(
        "--amp",
        choices=("auto", "on", "off"),
        default="auto",
        help="--amp for the training runs (auto: on for CUDA, off for CPU)",
    )
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run")
    p.add_argument("--skip", default="", help="comma-separated stages to leave out")
    for name, value in vars(GPU_SETTINGS).items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=type(value), default=None, help=f"(default {value})")
    return p


def resolve_settings(args: argparse.Namespace) -> Settings:
    """GPU or quick defaults, overridden by the explicit flags."""
    base = QUICK_SETTINGS if args.quick else GPU_SETTINGS
    values = {k: getattr(args, k) for k in vars(base) if getattr(args, k) is not None}
    return Settings(**{**vars(base), **values})


def _stage_list(args: argparse.Namespace) -> list[str]:
    wanted = [s for s in args.stages.split(",") if s]
    skipped = {s for s in args.skip.split(",") if s}
    unknown = sorted((set(wanted) | skipped) - set(STAGES))
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    return [s for s in STAGES if s in wanted and s not in skipped]


def run_stage(check: Check, name: str) -> None:
    """Run one stage and record its status, time and results (a failure never propagates)."""
    entry: dict = {"status": "running"}
    check.results[name] = entry
    left = check.remaining()
    reason = None
    if left < STAGE_MIN_S.get(name, check.settings.min_stage_s):
        reason = f"time budget spent ({left:.0f} s left)"
    elif check.on_cuda and check.results.get("env", {}).get("cuda_available") is False:
        reason = f"--device {check.device} but torch sees no CUDA device (stage env)"
    if reason:
        entry.update(status="skipped", reason=reason)
        check.say(f"[{name}] skipped: {reason}")
        return
    check.say(f"[{name}] start ({left:.0f} s of the budget left)")
    tic = time.perf_counter()
    try:
        entry.update(STAGES[name](check))
        entry["status"] = "ok"
    except StageError as exc:
        entry.update(status="failed", error=str(exc), **exc.details)
    except Exception as exc:  # noqa: BLE001 - a failed stage must not lose the report
        entry.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8)[-4000:],
        )
    entry["seconds"] = round(time.perf_counter() - tic, 2)
    check.say(f"[{name}] {entry['status']} in {entry['seconds']:.1f} s")
    if entry["status"] == "failed":
        check.say(f"[{name}] error: {entry['error']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected stages; write ``gpu_check.json`` and ``gpu_check.md`` to ``--out``."""
    args = build_parser().parse_args(argv)
    names = _stage_list(args)
    out = Path(args.out or os.environ.get("OUT") or REPO / "runs" / "gpu_check")
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "gpu_check_work"
    amp = args.amp == "on" or (args.amp == "auto" and args.device.startswith("cuda"))
    check = Check(
        settings=resolve_settings(args),
        device=args.device,
        amp=amp,
        repo=REPO,
        data=Path(args.data).resolve(),
        out=out,
        work=work,
        argv=list(sys.argv[1:] if argv is None else argv),
    )
    check.prepare()
    for name in names:
        run_stage(check, name)
        report.write(check)
    paths = report.write(check)
    failed = [n for n, r in check.results.items() if r["status"] == "failed"]
    check.say(f"wrote: report {paths[0]}, summary {paths[1]}")
    if failed:
        check.say(f"failed stages: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
