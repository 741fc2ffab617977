#!/usr/bin/env bash
# The project's one GPU check, unattended, within a hard time plan (default 540 s in all): the card, the tests that
# skip without CUDA, the fused Triton renderer's benchmark against its targets, `nfldm bench --device cuda`, and
# stage-1 training steps of the `small` preset for the time that is left; then OUT_DIR/summary.md with every figure.
#
#   bash scripts/gpu_recipe.sh OUT_DIR                       # from anywhere; on the machine with the GPU
#   GPU_RECIPE_DRY_RUN=1 bash scripts/gpu_recipe.sh OUT_DIR  # anywhere: the plan, the non-CUDA parts, on CPU
#
# A GPU machine without this checkout's .venv (Python 3.12 with torch, Lightning and Triton, no network):
#   1. here, with network:  bash scripts/gpu_wheels.sh   -> .gpu_carry/ (gitignored): cp312 wheels of diffusers,
#      zarr, numcodecs, open_clip and their missing dependencies, the project's own wheel, and a 128x128
#      procedural capture (Open3D, which the procedural simulator needs, is too large a wheel to carry);
#   2. send the working tree with .gpu_carry (a device tool that copies the tree and named ignored paths: name
#      `.gpu_carry` as carried; tree + carry is ~35 MB); there the recipe installs the wheels --no-deps --no-index
#      into $GPU_RECIPE_SITE (on PYTHONPATH) when their imports fail, and the checkout itself editable (or the
#      carried project wheel) when `nfldm_training` is not importable;
#   3. run there, e.g. (summary.md and one archive of every file come back through the tool's output folder $OUT):
#        bash scripts/gpu_recipe.sh /tmp/gpu 2>&1 | tee /tmp/gpu.log; cp /tmp/gpu/summary.md /tmp/gpu.log "$OUT"/; \
#        tar czf "$OUT"/gpu_recipe.tar.gz -C /tmp gpu
#      with a command time limit of 600 s (the plan's 540 s + start-up).
#
# Time plan (seconds; each step runs under `timeout`, and never past what is left of GPU_RECIPE_BUDGET):
#   setup 60 | nvidia-smi 15 | compile-report 40 | cuda-tests 150 | render-bench 100 | nfldm-bench 100
#   | train: the rest, less 15 s kept for the summary (at least 60 s when every step above hits its cap)
#
# OUT_DIR gets: steps.tsv (step, status, exit code, seconds, cap), setup.txt, gpu.txt + nvidia-smi.txt,
# compile_report.json + .txt, tests_render.xml + tests_gpu.xml + tests.txt, render_bench.json + .txt,
# bench.json + .txt, train.json + .txt, summary.md + summary.json, recipe.log (the plan and each step's end).
# Exit status: 0 when every step that ran succeeded (a missed render target counts as a failed step), else 1.
#
# Env: PYTHON (default: .venv/bin/python, else python if it has torch, else python3), GPU_RECIPE_BUDGET (540),
# GPU_RECIPE_CARRY (.gpu_carry), GPU_RECIPE_SITE (/tmp/nfldm_site), GPU_RECIPE_CAPTURE (a capture store; default
# CARRY/capture.zarr, else one collected at 128x128 when Open3D imports), GPU_RECIPE_PRESET (small),
# GPU_RECIPE_WORK (the training run and collected capture; default a new folder under /tmp),
# GPU_RECIPE_MAX_STEPS (training step cap; default the preset's, 3 in a dry run), GPU_RECIPE_DRY_RUN (1: print the
# plan, skip the CUDA steps, train on the CPU; GPU_RECIPE_TRAIN_SECONDS, default 20, bounds that training).
set -uo pipefail
usage="usage: bash scripts/gpu_recipe.sh OUT_DIR   (GPU_RECIPE_DRY_RUN=1 for the plan and the CPU-side steps)"
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1" || exit 2
OUT_DIR="$(cd "$1" && pwd)"
CALLER_DIR="$PWD"
cd "$(dirname "$0")/.." || exit 2
ROOT="$PWD"

BUDGET="${GPU_RECIPE_BUDGET:-540}"
DRY="${GPU_RECIPE_DRY_RUN:-0}"
CARRY="${GPU_RECIPE_CARRY:-.gpu_carry}"
SITE="${GPU_RECIPE_SITE:-/tmp/nfldm_site}"
PRESET="${GPU_RECIPE_PRESET:-small}"
WORK="${GPU_RECIPE_WORK:-$(mktemp -d /tmp/nfldm_gpu_recipe.XXXXXX)}"
SUMMARY_RESERVE=15
T0=$SECONDS
mkdir -p "$WORK"
# a rerun into the same folder must not report the figures of the last run
rm -f "$OUT_DIR"/{steps.tsv,DRY_RUN,gpu.txt,render_bench.json,bench.json,train.json,summary.md,summary.json} \
    "$OUT_DIR"/tests_*.xml
[ "$DRY" = 1 ] && touch "$OUT_DIR/DRY_RUN"

# The tests that skip without CUDA: whole files (every test of the fused renderer runs on CUDA when it can; the
# reference's own tests, test_render.py, are CPU-only), single tests, and every test marked `gpu`
# (tests/project/test_gpu_recipe.py checks that these cover every test that skips without CUDA).
CUDA_TEST_FILES="tests/sdk/rendering/test_render_triton.py"
CUDA_TEST_NODES="tests/sdk/cameras/test_fisheye.py::test_triton_renders_fisheye_rays_like_the_reference"
GPU_MARKED_FILES="$(grep -rlE --include='test_*.py' '^\s*@pytest\.mark\.gpu\b|^pytestmark.*pytest\.mark\.gpu\b' tests | sort | tr '\n' ' ')"

log() { echo "[gpu_recipe $((SECONDS - T0))s] $*" | tee -a "$OUT_DIR/recipe.log"; }
: > "$OUT_DIR/recipe.log"

# ------------------------------------------------------------------------------------------------ Python
PY="${PYTHON:-}"
case "$PY" in */*) [ "${PY#/}" = "$PY" ] && PY="$CALLER_DIR/$PY" ;; esac   # a relative path: from the caller's folder
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python
    elif command -v python >/dev/null && python -c "import torch" 2>/dev/null; then PY=python
    else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ "$DRY" = 1 ] || unset TRITON_INTERPRET   # compiled kernels: the interpreter is for CPU-only test runs

# ------------------------------------------------------------------------------------------------ the plan
PLAN="setup:60 nvidia-smi:15 compile-report:40 cuda-tests:150 render-bench:100 nfldm-bench:100 train:rest"
cap_of() { local s; for s in $PLAN; do [ "${s%%:*}" = "$1" ] && echo "${s#*:}"; done; }
log "plan (budget ${BUDGET}s, ${SUMMARY_RESERVE}s kept for the summary): ${PLAN// / | }"
log "python: $PY; out: $OUT_DIR; work: $WORK; preset: $PRESET; dry run: $DRY"
log "cuda tests: $CUDA_TEST_FILES $CUDA_TEST_NODES; marked gpu (-m gpu): $GPU_MARKED_FILES"

failed=0
left() { echo $((BUDGET - (SECONDS - T0) - SUMMARY_RESERVE)); }

# run_step NAME CAP LOGFILE CMD...: CMD under `timeout` (CAP, or what is left of the budget), output to
# OUT_DIR/LOGFILE; one line in steps.tsv. CAP "rest" = everything left.
run_step() {
    local name=$1 cap=$2 logfile=$3; shift 3
    local l; l=$(left)
    [ "$cap" = rest ] && cap=$l
    [ "$cap" -gt "$l" ] && cap=$l
    if [ "$cap" -lt 5 ]; then
        printf '%s\tskipped (no time left)\t-\t0\t%s\n' "$name" "$cap" >> "$OUT_DIR/steps.tsv"
        log "$name: skipped, no time left"; return 0
    fi
    log "$name (cap ${cap}s): $*"
    local start=$SECONDS rc
    timeout -k 10 "$cap" "$@" > "$OUT_DIR/$logfile" 2>&1
    rc=$?
    local status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timed out"; elif [ $rc -ne 0 ]; then status=failed; fi
    [ $rc -eq 0 ] || failed=1
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - start))" "$cap" >> "$OUT_DIR/steps.tsv"
    log "$name: $status (exit $rc, $((SECONDS - start))s); last lines:"
    tail -n 3 "$OUT_DIR/$logfile" | sed 's/^/    /' | tee -a "$OUT_DIR/recipe.log"
}

skip_step() {  # skip_step NAME WHY
    printf '%s\tskipped (%s)\t-\t0\t-\n' "$1" "$2" >> "$OUT_DIR/steps.tsv"
    log "$1: skipped ($2)"
}

# ------------------------------------------------------------------------------------------------ steps
setup() {
    # Wheels first (their imports are what the project needs), then the project itself.
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("diffusers", "zarr", "numcodecs", "open_clip")
               if importlib.util.find_spec(m) is None))
EOF
)
    echo "python $("$PY" -c 'import sys; print(sys.version.split()[0])'), torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.cuda.is_available())' 2>&1 | tail -1)"
    if [ -n "$missing" ]; then
        if [ "$DRY" = 1 ]; then echo "dry run: would install the carried wheels for: $missing"
        elif compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
            local deps; deps=$(ls "$CARRY"/wheels/*.whl | grep -v '/nfldm-')
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $deps \
                || return 1
            echo "installed into $SITE (missing before: $missing): $(echo $deps | xargs -n1 basename | tr '\n' ' ')"
        else
            echo "missing $missing and no wheels in $CARRY/wheels: run scripts/gpu_wheels.sh where there is network" >&2
            return 1
        fi
    fi
    if ! "$PY" -c "import importlib.metadata as m; m.version('nfldm'); import nfldm_training" 2>/dev/null; then
        if [ "$DRY" = 1 ]; then echo "dry run: would install the checkout (pip install -e . --no-deps)"
        elif "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ; then echo "installed the checkout (editable)"
        elif compgen -G "$CARRY/wheels/nfldm-*.whl" >/dev/null; then
            "$PY" -m pip install -q --no-index --no-deps --force-reinstall "$CARRY"/wheels/nfldm-*.whl || return 1
            echo "installed the carried project wheel (not editable: the checkout's files as of gpu_wheels.sh)"
        else
            echo "the project is not installed and cannot be: pip install -e . failed" >&2; return 1
        fi
    fi
    "$PY" -c "import nfldm_training, nfldm_sdk, sim_bridge, diffusers, zarr; print('imports ok')"
}

capture_store() {
    # A capture for the training step: given, carried, or collected here (needs Open3D).
    if [ -n "${GPU_RECIPE_CAPTURE:-}" ]; then echo "$GPU_RECIPE_CAPTURE"; return; fi
    if [ -d "$CARRY/capture.zarr" ]; then echo "$ROOT/$CARRY/capture.zarr"; return; fi
    if "$PY" -c "import open3d" 2>/dev/null; then
        timeout 90 "$PY" -m sim_bridge.cli collect --backend procedural --town Town03 --episodes 2 --frames 12 --width 128 \
            --height 128 --seed 3 --out "$WORK/capture.zarr" --overwrite --quiet >&2 && echo "$WORK/capture.zarr"
    fi
}

export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PY DRY CARRY SITE
export -f setup
run_step setup "$(cap_of setup)" setup.txt bash -c setup
if [ "$DRY" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    log "warning: torch sees no CUDA device: the CUDA steps will fail (GPU_RECIPE_DRY_RUN=1 runs the CPU side alone)"
fi
if [ "$DRY" = 1 ]; then
    for s in nvidia-smi compile-report cuda-tests render-bench nfldm-bench; do skip_step "$s" "dry run"; done
else
    run_step nvidia-smi "$(cap_of nvidia-smi)" nvidia-smi.txt bash -c \
        "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > '$OUT_DIR/gpu.txt' && nvidia-smi"
    run_step compile-report "$(cap_of compile-report)" compile_report.txt bash -c \
        "'$PY' -m nfldm_sdk.benchmarks.triton_report --arch 90 --indent 1 > '$OUT_DIR/compile_report.json'"
    run_step cuda-tests "$(cap_of cuda-tests)" tests.txt bash -c "
        '$PY' -m pytest -q -rfE -p no:cacheprovider --junitxml='$OUT_DIR/tests_render.xml' $CUDA_TEST_FILES $CUDA_TEST_NODES
        a=\$?
        b=0
        if [ -n '$GPU_MARKED_FILES' ]; then   # no files: -m gpu would collect the whole suite
            '$PY' -m pytest -q -rfE -p no:cacheprovider -m gpu --junitxml='$OUT_DIR/tests_gpu.xml' $GPU_MARKED_FILES
            b=\$?
        fi
        exit \$(( a > b ? a : b ))"
    run_step render-bench "$(cap_of render-bench)" render_bench.txt "$PY" -m nfldm_sdk.benchmarks.render --device cuda --batch 12 \
        --triton-batch 32 --check-targets --json "$OUT_DIR/render_bench.json"
    run_step nfldm-bench "$(cap_of nfldm-bench)" bench.txt "$PY" -m nfldm_sdk.cli.main bench --device cuda --only render --only sensors \
        --only sampling --only refine --out "$OUT_DIR/bench.json"
fi

CAPTURE="$(capture_store)"
if [ -z "$CAPTURE" ]; then
    skip_step train "no capture: set GPU_RECIPE_CAPTURE, carry $CARRY/capture.zarr (scripts/gpu_wheels.sh) or install Open3D"
else
    if [ "$DRY" = 1 ]; then
        steps="${GPU_RECIPE_MAX_STEPS:-3}"; secs="${GPU_RECIPE_TRAIN_SECONDS:-20}"; accel=cpu
    else
        steps="${GPU_RECIPE_MAX_STEPS:-}"; accel=auto
        # the rest of the budget, less ~60 s for the data set-up, the validations before and after and the save
        secs=$(( $(left) - 60 )); [ "$secs" -lt 20 ] && secs=20
    fi
    run_step train "$(cap_of train)" train.txt "$PY" -m nfldm_training.benchmarks.train_steps --data "$CAPTURE" --preset "$PRESET" \
        --seconds "$secs" ${steps:+--max-steps "$steps"} --accelerator "$accel" --out "$WORK/run_$PRESET" \
        --json "$OUT_DIR/train.json"
fi

log "summary"
"$PY" scripts/gpu_summary.py "$OUT_DIR" > /dev/null || { failed=1; cat "$OUT_DIR/steps.tsv" > "$OUT_DIR/summary.md"; }
log "done in $((SECONDS - T0))s: $OUT_DIR/summary.md (status $failed)"
exit $failed
