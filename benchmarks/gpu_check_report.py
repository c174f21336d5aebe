"""The JSON and Markdown reports of ``benchmarks/gpu_check.py`` (rewritten after every stage)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from gpu_check_common import Check

JSON_NAME = "gpu_check.json"
MD_NAME = "gpu_check.md"
#: The issue's targets on the device: share of the bf16 peak, light-model clips/s.
PAPER_PEAK_TARGET = 0.40
LIGHT_CLIPS_TARGET = 5000.0


def summary(check: Check) -> dict[str, Any]:
    """Headline numbers from the stage results: rates, fractions of the peak, targets."""
    r = check.results
    peak = r.get("gemm_peak", {}).get("peak_tflops")
    flops = r.get("profile", {}).get("paper_flops_per_clip")
    out: dict[str, Any] = {"bf16_peak_tflops": peak}
    paper = r.get("paper_train", {}).get("clips_per_s")
    if paper is not None:
        out["paper_clips_per_s"] = paper
        if flops and peak:
            tflops = paper * flops / 1e12
            out["paper_train_tflops"] = float(f"{tflops:.4g}")
            out["paper_train_peak_fraction"] = float(f"{tflops / peak:.4g}")
            out["paper_target_met"] = tflops / peak >= PAPER_PEAK_TARGET
    model_tflops = r.get("profile", {}).get("paper_model_tflops")
    if model_tflops is not None and peak:
        out["paper_model_only_peak_fraction"] = float(f"{model_tflops / peak:.4g}")
    light = r.get("light_train", {}).get("clips_per_s")
    if light is not None:
        out["light_clips_per_s"] = light
        out["light_target_met"] = light >= LIGHT_CLIPS_TARGET
    out["stages_ok"] = sorted(n for n, v in r.items() if v.get("status") == "ok")
    out["stages_failed"] = sorted(n for n, v in r.items() if v.get("status") == "failed")
    out["stages_skipped"] = sorted(n for n, v in r.items() if v.get("status") == "skipped")
    return out


def document(check: Check) -> dict[str, Any]:
    """The whole JSON report."""
    return {
        "tool": "benchmarks/gpu_check.py",
        "started_utc": check.started_utc,
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": check.argv,
        "device": check.device,
        "amp": check.amp,
        "data": str(check.data),
        "settings": check.settings_dict(),
        "summary": summary(check),
        "stages": check.results,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if not isinstance(v, dict))
    return str(value)


_HEADLINES = {
    "env": ("torch", "torch_cuda", "cudnn", "gpu", "nvidia_smi", "absent"),
    "gemm_peak": ("size", "tflops_median", "tflops_best"),
    "paper_train": ("clips_per_s", "clips_per_s_wall", "wall_s", "config"),
    "light_train": ("clips_per_s", "clips_per_s_wall", "wall_s", "config"),
    "export": ("verification", "wall_s"),
    "parity": (),
    "resume": ("paper", "light"),
    "torchrun": ("ddp_used", "nccl_used", "clips_per_s", "note"),
    "compile": ("clips_per_s", "speedup_vs_eager", "wall_s"),
    "profile": (
        "paper_flops_per_clip",
        "paper_model_clips_per_s",
        "paper_model_tflops",
        "paper_model_step_s",
        "paper_model_step_s_encoder_channels_last",
        "paper_model_step_s_cudnn_benchmark",
        "paper_distinct_frames",
        "matrix_kernel_share",
        "light_model_clips_per_s",
    ),
    "paper_compile": ("clips_per_s", "speedup_vs_eager", "wall_s"),
}


def markdown(check: Check) -> str:
    """A readable summary: headline table with targets, one row per stage, the kernel table."""
    doc = document(check)
    s = doc["summary"]
    env = check.results.get("env", {})
    gpu = env.get("gpu", {}).get("name", "no CUDA device")
    lines = [
        "# GPU check",
        "",
        f"{doc['started_utc']} · device `{check.device}` ({gpu}) · torch {env.get('torch')} "
        f"(CUDA {env.get('torch_cuda')}) · AMP {'on' if check.amp else 'off'} · "
        f"`python3 benchmarks/gpu_check.py {' '.join(check.argv)}`",
        "",
        "| headline | measured | target |",
        "|---|---|---|",
        f"| bf16 GEMM peak, this run | {_fmt(s.get('bf16_peak_tflops'))} TFLOP/s | |",
        f"| paper model training, CLI | {_fmt(s.get('paper_clips_per_s'))} clips/s = "
        f"{_fmt(s.get('paper_train_peak_fraction'))} of the peak | ≥ {PAPER_PEAK_TARGET:.0%} |",
        f"| paper model forward + backward only | "
        f"{_fmt(s.get('paper_model_only_peak_fraction'))} of the peak | |",
        f"| light model training, CLI | {_fmt(s.get('light_clips_per_s'))} clips/s | "
        f"≥ {LIGHT_CLIPS_TARGET:,.0f} |",
        "",
        "| stage | status | s | results |",
        "|---|---|---|---|",
    ]
    for name, result in check.results.items():
        keys = _HEADLINES.get(name, ())
        if name == "parity":
            keys = tuple(k for k in result if k.endswith("_rel"))
        shown = "; ".join(f"{k}: {_fmt(result[k])}" for k in keys if k in result)
        if result.get("status") != "ok":
            shown = result.get("error") or result.get("reason") or shown
        shown = shown.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {result.get('status')} | {result.get('seconds', '')} | {shown} |")
    table = check.results.get("profile", {}).get("profile_table")
    if table:
        lines += ["", "Paper model, top operators over three forward + backward steps:", ""]
        lines += ["```", table.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write(check: Check) -> tuple[Path, Path]:
    """Write both reports atomically into ``check.out``; return their paths."""
    json_path, md_path = check.out / JSON_NAME, check.out / MD_NAME
    _write(json_path, json.dumps(document(check), indent=2, default=str) + "\n")
    _write(md_path, markdown(check))
    return json_path, md_path
