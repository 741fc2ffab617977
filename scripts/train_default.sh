#!/usr/bin/env bash
# Reproduce the shipped default model (assets/models/default) from scratch on a machine without a GPU:
# capture 12 training stores (6 towns x 2 weathers x 16 episodes) and 2 evaluation stores of towns, weathers and
# seeds no stage sees (Town07 CloudyNoon, Town10HD SoftRainSunset), train every stage with the `default` preset
# (`nfldm train-all --preset default`: its own step counts are the CPU budget; resumable: rerun after an interruption
# and every finished stage is skipped, the running one continues from its last checkpoint), export the bundle
# (float16, with the perception critic and the SDS prior), and evaluate it on the evaluation stores.
#
#   bash scripts/train_default.sh [WORK] [BUNDLE]     # defaults: runs/d128, assets/models/default
#
# With a GPU, train the `small` preset at its full step counts instead:
#   PRESET=small BUDGET=gpu bash scripts/train_default.sh runs/small runs/small/bundle
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
WORK="${1:-$ROOT/runs/d128}"
BUNDLE="${2:-$ROOT/assets/models/default}"
PRESET="${PRESET:-default}"
BUDGET="${BUDGET:-cpu}"
export HF_HUB_OFFLINE=1
mkdir -p "$WORK/data"

capture() {  # town weather seed episodes store-name
  local store="$WORK/data/$5"
  if [ -d "$store" ]; then
    "$BIN/sim_bridge" collect --out "$store" --resume --quiet   # finishes an interrupted capture (no-op when complete)
  else
    "$BIN/sim_bridge" collect --backend procedural --town "$1" --weather "$2" --seed "$3" --episodes "$4" \
      --frames 24 --width 128 --height 128 --out "$store" --quiet
  fi
}
lower() { echo "$1" | tr 'A-Z' 'a-z'; }

# training: six towns of different character, two weathers / times of day each, seeds 11..22
TRAIN=("Town01 ClearNoon" "Town01 WetCloudyNoon" "Town02 ClearSunset" "Town02 WetNoon" "Town03 CloudySunset"
       "Town03 ClearNoon" "Town04 SoftRainNoon" "Town04 ClearSunset" "Town05 WetNoon" "Town05 CloudySunset"
       "Town06 ClearNoon" "Town06 WetCloudyNoon")
STORES=()
seed=10
for spec in "${TRAIN[@]}"; do
  read -r town weather <<< "$spec"
  seed=$((seed + 1))
  name="train_$(lower "$town")_$(lower "$weather").zarr"
  capture "$town" "$weather" "$seed" 16 "$name"
  STORES+=("$WORK/data/$name")
done
# evaluation: towns, weathers and seeds that no stage trains on
capture Town07 CloudyNoon 901 8 eval_town07_cloudynoon.zarr
capture Town10HD SoftRainSunset 902 8 eval_town10hd_softrainsunset.zarr
EVAL=("$WORK/data/eval_town07_cloudynoon.zarr" "$WORK/data/eval_town10hd_softrainsunset.zarr")

"$BIN/nfldm" train-all --data "${STORES[@]}" --preset "$PRESET" --budget "$BUDGET" --out "$WORK/runs" \
  --bundle "$BUNDLE" --no-progress

# half of each evaluation store's episodes are the held-out reference, the other half the critic distance's ceiling
"$BIN/nfldm" eval --model "$BUNDLE" --data "${EVAL[@]}" --val-fraction 0.5 --num-scenes 16 --out "$WORK/eval"
echo "bundle: $BUNDLE   evaluation: $WORK/eval/eval.md   training record: $WORK/runs/train_all.json"
