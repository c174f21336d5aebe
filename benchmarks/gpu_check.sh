#!/usr/bin/env bash
# The one-command GPU check: train the paper and the light model on CUDA, resume, compile,
# torchrun, export, ONNX parity; JSON + Markdown report and the log in $OUT (or --out DIR).
#   bash benchmarks/gpu_check.sh                       # on the GPU machine, from any folder
#   bash benchmarks/gpu_check.sh --device cpu --quick  # tiny CPU run
# Uses $PYTHON (default python3) without a virtual environment; extra arguments go to
# benchmarks/gpu_check.py (see --help). Exit status 1 when a stage failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu_check}"
prev=""
for arg in "$@"; do
  if [ "$prev" = "--out" ]; then out="$arg"; fi
  case "$arg" in --out=*) out="${arg#--out=}" ;; esac
  prev="$arg"
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"${PYTHON:-python3}" benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
