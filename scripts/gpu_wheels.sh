#!/usr/bin/env bash
# Prepare, on a machine with network access and this checkout's .venv, what scripts/gpu_recipe.sh needs on a GPU
# machine that has Python 3.12 with torch, Lightning and Triton but no network and none of the project's other
# packages. Everything goes into one gitignored folder (default .gpu_carry/):
#
#   CARRY/wheels/*.whl     cp312 manylinux wheels of the packages such a machine lacks, at the versions this .venv
#                          has (downloaded --no-deps; `pip download` fetches them for Python 3.12 whatever runs it),
#                          and the project's own wheel (the fallback when an editable install fails there)
#   CARRY/capture.zarr     a procedural capture at the small preset's 128x128 for the recipe's training step:
#                          Open3D, which the procedural simulator renders with, is a ~105 MB wheel, too large to carry
#
#   bash scripts/gpu_wheels.sh [CARRY]          # CARRY defaults to .gpu_carry; prints the folder's size
#
# Then send the checkout with CARRY to the GPU machine (a device tool that copies the working tree: name CARRY as a
# carried path; the working tree travels with it, ~5 MB) and run scripts/gpu_recipe.sh there (its header has the
# command). Env: PYTHON (default .venv/bin/python), GPU_WHEELS (the distributions to fetch), GPU_CAPTURE_EPISODES /
# GPU_CAPTURE_FRAMES (2 x 12).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY="${1:-.gpu_carry}"
PY="${PYTHON:-.venv/bin/python}"
# What the GPU image lacks (its package list has torch, lightning, triton, numpy, scipy, numba, scikit-image,
# transformers, timm, huggingface-hub, safetensors, imageio, click, rich, tqdm, fsspec, pyyaml, regex, pytest,
# pytest-timeout, setuptools, wheel); the dependencies of these that it lacks are listed too.
WHEELS="${GPU_WHEELS:-diffusers importlib-metadata zarr numcodecs donfig google-crc32c open-clip-torch ftfy wcwidth}"
mkdir -p "$CARRY/wheels"
rm -f "$CARRY"/wheels/*.whl

pins=()
for dist in $WHEELS; do
    if v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist" 2>/dev/null); then
        pins+=("$dist==$v")
    else
        echo "note: $dist is not installed in $PY's environment: not carried" >&2
    fi
done
echo "downloading ${pins[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CARRY/wheels" "${pins[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" .

if [ ! -d "$CARRY/capture.zarr" ]; then
    "$PY" -m sim_bridge.cli collect --backend procedural --town Town03 --episodes "${GPU_CAPTURE_EPISODES:-2}" \
        --frames "${GPU_CAPTURE_FRAMES:-12}" --width 128 --height 128 --seed 3 --out "$CARRY/capture.zarr" --quiet
fi
ls -l "$CARRY/wheels"
du -sh "$CARRY" "$CARRY/capture.zarr"
size=$(du -sm "$CARRY" | cut -f1)
if [ "$size" -gt 56 ]; then
    echo "warning: $CARRY is $size MiB; with the working tree it may pass a 64 MiB transfer limit" >&2
fi
