#!/usr/bin/env bash
# Fine-tune the image decoder (PART=image) or the label decoder (PART=labels) of a bundle's stage 1 alone and write a
# bundle with it (the third and fourth passes of the shipped default model; docs in assets/models/default/MODEL_CARD.md).
# The encoder, the semantic head and so every voxel field stay frozen and bit-identical, so the bundle's LAE and
# denoisers keep fitting. PART=labels adds a label decoder (LABEL_WIDTHS) that corrects the field's rendered labels
# at the image resolution, trained on the class-balanced (SEMANTIC_BALANCE) cross-entropy against the captured tags. With LAE_FRACTION=0.5 half the
# training fields are replaced by their LAE reconstructions V̂ (the decoder also learns the fields generation
# produces: +1.4 dB through the LAE, but greyer generated images; the shipped model uses 0). Cosine learning-rate
# decay. Resumable: rerun after an interruption and the run continues from its last checkpoint.
#
#   bash scripts/finetune_decoder.sh SRC_BUNDLE WORK OUT_BUNDLE STORE [STORE ...]
#   STEPS=1500, LAE_FRACTION=0, IMAGE_LOSS=l2, SSIM_WEIGHT=0, PART=image (defaults)
#   PART=labels: LABEL_WIDTHS=[64,32,24], SEMANTIC_BALANCE=0.5, LR=1e-3 (defaults)
#   e.g. bash scripts/finetune_decoder.sh runs/ft/bundle runs/dec runs/dec/bundle runs/d128/data/train_*.zarr
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
SRC="$1"; WORK="$2"; OUT="$3"; shift 3
PRESET="${PRESET:-default}"
STEPS="${STEPS:-1500}"
LAE_FRACTION="${LAE_FRACTION:-0}"   # 0.5: half the fields are LAE reconstructions (measured: model card)
IMAGE_LOSS="${IMAGE_LOSS:-l2}"       # the per-pixel error of the image loss: l1 or l2
SSIM_WEIGHT="${SSIM_WEIGHT:-0}"      # w of (1 - w) * error + w * (1 - SSIM)
PART="${PART:-image}"
export HF_HUB_OFFLINE=1
mkdir -p "$WORK"
case "$PART" in
  image) PART_ARGS=(--set scene_ae_train.trainable=decoder --set scene_ae_train.lr="${LR:-5e-4}"
                    --set scene_ae_train.image_loss="$IMAGE_LOSS" --set scene_ae_train.ssim_weight="$SSIM_WEIGHT") ;;
  labels) PART_ARGS=(--set scene_ae_train.trainable=labels --set scene_ae_train.lr="${LR:-1e-3}"
                     --set scene_ae.label_decoder_widths="${LABEL_WIDTHS:-[64,32,24]}"
                     --set scene_ae_train.semantic_balance="${SEMANTIC_BALANCE:-0.5}") ;;
  *) echo "PART=$PART: use image or labels" >&2; exit 2 ;;
esac
"$BIN/nfldm" train scene-ae --data "$@" --preset "$PRESET" --out "$WORK/s1" --max-steps "$STEPS" \
  --init-from "$SRC/scene_ae" --latent-ae "$SRC/latent_ae" "${PART_ARGS[@]}" \
  --set scene_ae_train.lae_input_fraction="$LAE_FRACTION" \
  --set scene_ae_train.lr_schedule=cosine --set scene_ae_train.warmup_steps=50 \
  --set scene_ae_train.render_views=6 --set scene_ae_train.val_interval=250 --no-progress
"$BIN/nfldm" replace-decoder --bundle "$SRC" --scene-ae "$WORK/s1" --out "$OUT" --overwrite
echo "bundle: $OUT"
