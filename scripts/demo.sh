#!/usr/bin/env bash
# The README's main job after the capture (rerunnable: it replaces its own renders in OUT): generate a scene with the shipped default model, drive the capture rig
# through it (lane change) to an MP4 and PNG frames, and take an Open3D screenshot of the scene.
#
#   bash scripts/demo.sh [OUT]          # default OUT: out/demo
#   DOCS=1 bash scripts/demo.sh         # also refresh the README images in docs/images/
#
# Environment: SEED (scene seed, default 0), LEVEL (mesh iso-level, default 0.1), NFLDM_DEFAULT_MODEL (another bundle), BIN (the venv's bin folder),
# DEVICE (torch device, default cpu).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
MODEL="${NFLDM_DEFAULT_MODEL:-$ROOT/assets/models/default}"
OUT="${1:-$ROOT/out/demo}"
SEED="${SEED:-0}"
DEVICE="${DEVICE:-cpu}"
# Iso-level (σ, 1/m) of the Open3D mesh: the shipped CPU-budget model's fields are those of its tiny stage 1 —
# 99 % of voxels below 0.25/m, surfaces of 1-5/m (see its MODEL_CARD.md) — so the viewer's default level would find
# few surfaces; 0.1/m shows the walls and objects along the road.
LEVEL="${LEVEL:-0.1}"
export HF_HUB_OFFLINE=1

if [ ! -f "$MODEL/manifest.json" ]; then
  echo "no model bundle at $MODEL: check out the repository's assets/models/default, or build one with" \
       "scripts/train_default.sh and set NFLDM_DEFAULT_MODEL" >&2
  exit 1
fi
mkdir -p "$OUT"
SCENE="$OUT/scenes/scene_$(printf '%06d' "$SEED")"

echo "== 1/4 generate a scene (seed $SEED) with $MODEL"
"$BIN/nfldm" generate --model "$MODEL" --num 1 --seed "$SEED" --out "$OUT/scenes" --device "$DEVICE" --overwrite

echo "== 2/4 render a 20 m lane change of the 6-camera capture rig to MP4 (RGB + inverse-depth rows)"
"$BIN/nfldm" render "$SCENE" --model "$MODEL" --rig capture --trajectory lane_change --length 20 --speed 10 \
  --rate 10 --device "$DEVICE" --with-depth --overwrite --out "$OUT/drive.mp4"

echo "== 3/4 the same drive as PNG + depth NPY frames"
"$BIN/nfldm" render "$SCENE" --model "$MODEL" --rig capture --trajectory lane_change --length 20 --speed 10 \
  --rate 10 --device "$DEVICE" --overwrite --out "$OUT/frames"

echo "== 4/4 Open3D screenshot of the scene (density iso-surface at LEVEL, rig frustums along the drive)"
"$BIN/nfldm" view "$SCENE" --model "$MODEL" --rig capture --trajectory lane_change --length 20 \
  --geometry mesh --level "$LEVEL" --screenshot "$OUT/scene_open3d.png" --size 960 540 --device "$DEVICE"

# A preview grid: rows = frames 0, 10, 20 of the drive, columns = the rig's cameras.
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import imageio.v3 as iio
import numpy as np
out = Path(sys.argv[1])
meta = json.loads((out / "frames" / "frames.json").read_text())
cams = list(dict.fromkeys(m["camera"] for m in meta))
frames = sorted({m["frame"] for m in meta})
pick = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})]
rows = []
for f in pick:
    imgs = [iio.imread(out / "frames" / next(m["rgb"] for m in meta if m["frame"] == f and m["camera"] == c)) for c in cams]
    rows.append(np.concatenate(imgs, axis=1))
iio.imwrite(out / "preview_grid.png", np.concatenate(rows, axis=0))
print(f"preview grid: {len(pick)} frames x {len(cams)} cameras ({', '.join(cams)})")
PY

if [ "${DOCS:-0}" = "1" ]; then
  mkdir -p "$ROOT/docs/images"
  cp "$OUT/preview_grid.png" "$ROOT/docs/images/demo_drive_grid.png"
  "$BIN/python" -c "
import sys, imageio.v3 as iio, numpy as np
im = iio.imread(sys.argv[1])[..., :3]
iio.imwrite(sys.argv[2], im[::2, ::2] if im.shape[1] > 640 else im, optimize=True)" \
    "$OUT/scene_open3d.png" "$ROOT/docs/images/demo_open3d.png"
  echo "README images: docs/images/demo_drive_grid.png, docs/images/demo_open3d.png"
fi

echo
echo "scene          : $SCENE  (field.safetensors + scene.json + preview.png)"
echo "drive video    : $OUT/drive.mp4"
echo "drive frames   : $OUT/frames/  (<camera>/<frame>.png, depth and alpha .npy, frames.json)"
echo "preview grid   : $OUT/preview_grid.png"
echo "Open3D view    : $OUT/scene_open3d.png"
