#!/usr/bin/env bash
# GPU check of the fused Triton renderer (nfldm_sdk.rendering.triton_render): the render tests on CUDA (compiled kernels,
# the issue's sizes included), the kernels' register/spill report (nfldm_sdk.benchmarks.triton_report), and the render
# benchmark with its JSON.
#
#   OUT=out/gpu_render bash scripts/gpu_bench_render.sh          # from the repo root, on a machine with a GPU
#
# Writes under $OUT: nvidia-smi.txt, compile_report.json, tests.txt, render_bench.txt, render_bench.json.
# Python: $PYTHON, else .venv/bin/python, else python. Exits non-zero if the tests or the bench failed (both run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_render}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
unset TRITON_INTERPRET   # compiled kernels: the interpreter is for CPU-only test runs
export HF_HUB_OFFLINE=1

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$OUT/nvidia-smi.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0))" \
    || { echo "no CUDA device: nothing to measure" >&2; exit 2; }

status=0
"$PY" -m nfldm_sdk.benchmarks.triton_report --arch 90 --indent 1 > "$OUT/compile_report.json" || status=1
"$PY" -m pytest tests/sdk/rendering/test_render_triton.py tests/sdk/rendering/test_render.py -q -rA -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" -m nfldm_sdk.benchmarks.render --device cuda --batch 12 --triton-batch "${TRITON_BATCH:-32}" \
    --json "$OUT/render_bench.json" 2>&1 | tee "$OUT/render_bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "results in $OUT (status $status)"
exit $status
