#!/usr/bin/env bash
# Reproduce the tiny CPU demonstration model (the default bundle up to hash 59edaaacd9c4) from scratch:
# capture 4 towns x 4 episodes with the built-in simulator, train every stage with the `tiny` preset and the CPU
# budget (`nfldm train-all --budget cpu`, resumable: rerun after an interruption), export the bundle (float16),
# and evaluate it on the held-out episodes. About 30 minutes on 2 idle CPU cores (2-4x that on shared ones).
#
#   bash scripts/train_tiny_demo.sh [WORK] [BUNDLE]     # defaults: runs/default, assets/models/default
#
# With a GPU, train the `small` preset at its full step counts instead:
#   PRESET=small BUDGET=gpu bash scripts/train_default.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
WORK="${1:-$ROOT/runs/default}"
BUNDLE="${2:-$ROOT/assets/models/default}"
PRESET="${PRESET:-tiny}"
BUDGET="${BUDGET:-cpu}"
export HF_HUB_OFFLINE=1
mkdir -p "$WORK/data"

# town, weather, seed: four towns of different character, four weathers / times of day
SPECS=("Town01 ClearNoon 1" "Town03 CloudySunset 2" "Town05 WetNoon 3" "Town10HD ClearSunset 4")
STORES=()
for spec in "${SPECS[@]}"; do
  read -r town weather seed <<< "$spec"
  store="$WORK/data/$(echo "$town" | tr 'A-Z' 'a-z')_$(echo "$weather" | tr 'A-Z' 'a-z').zarr"
  STORES+=("$store")
  if [ -d "$store" ]; then
    "$BIN/sim_bridge" collect --out "$store" --resume --quiet   # finishes an interrupted capture (no-op when complete)
  else
    "$BIN/sim_bridge" collect --backend procedural --town "$town" --weather "$weather" --seed "$seed" \
      --episodes 4 --frames 24 --width 128 --height 128 --out "$store" --quiet
  fi
done

"$BIN/nfldm" train-all --data "${STORES[@]}" --preset "$PRESET" --budget "$BUDGET" --out "$WORK/runs" \
  --bundle "$BUNDLE" --no-progress

"$BIN/nfldm" eval --model "$BUNDLE" --data "${STORES[@]}" --num-scenes 16 --out "$WORK/eval"
echo "bundle: $BUNDLE   evaluation: $WORK/eval/eval.md   training record: $WORK/runs/train_all.json"
