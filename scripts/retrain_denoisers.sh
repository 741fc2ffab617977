#!/usr/bin/env bash
# Retrain only the stage-3 denoisers of a bundle on its own (frozen) autoencoders: capture stores -> voxels with the
# bundle's scene_ae -> latents with its latent_ae -> ψ_g, ψ_c, ψ_f with the `default` preset -> a new bundle with the
# old autoencoders, critic and prior. Resumable like train_default.sh (every step skips what is done).
#
#   bash scripts/retrain_denoisers.sh SRC_BUNDLE WORK OUT_BUNDLE STORE...
#
# LAE_STEPS=N first fine-tunes the bundle's latent auto-encoder for N steps on the voxels (`nfldm train latent-ae
# --init-from`, the preset's latent_ae_train settings, label losses included) and uses it for the latents and the
# new bundle (how the shipped default's LAE was trained on from its first 800 steps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
SRC="$1"; WORK="$2"; OUT="$3"; shift 3
PRESET="${PRESET:-default}"
export HF_HUB_OFFLINE=1
mkdir -p "$WORK/models"
# copies: encode-latents writes the latent statistics into its model's config.json
for part in scene_ae latent_ae; do
  [ -d "$WORK/models/$part" ] || cp -r "$SRC/$part" "$WORK/models/$part"
done
"$BIN/nfldm" encode-voxels --model "$WORK/models/scene_ae" --data "$@" --out "$WORK/voxels.zarr" --window 2 --stride 2 --no-progress
LAE="$WORK/models/latent_ae"
if [ -n "${LAE_STEPS:-}" ]; then
  "$BIN/nfldm" train latent-ae --voxels "$WORK/voxels.zarr" --scene-ae "$WORK/models/scene_ae" --data "$@" \
    --init-from "$SRC/latent_ae" --preset "$PRESET" --max-steps "$LAE_STEPS" --out "$WORK/lae" --no-progress \
    ${LAE_SET:-}
  LAE="$WORK/lae"
fi
"$BIN/nfldm" encode-latents --model "$LAE" --voxels "$WORK/voxels.zarr" --out "$WORK/latents.zarr" --no-progress
for level in g c f; do
  "$BIN/nfldm" train ldm --level "$level" --latents "$WORK/latents.zarr" --preset "$PRESET" --out "$WORK/ldm_$level" --no-progress
done
"$BIN/nfldm" export-bundle --scene-ae "$WORK/models/scene_ae" --latent-ae "$LAE" --ldm-g "$WORK/ldm_g" \
  --ldm-c "$WORK/ldm_c" --ldm-f "$WORK/ldm_f" --out "$OUT" --half --overwrite
# the optional parts of the source bundle, listed in the new manifest with their sha256
"$BIN/python" - "$SRC" "$OUT" <<'PY'
import sys
from pathlib import Path
from nfldm_sdk.guidance.prior import add_prior_to_bundle
from nfldm_sdk.models.critic import add_critic_to_bundle
src, out = Path(sys.argv[1]), Path(sys.argv[2])
if (src / "critic").is_dir():
    add_critic_to_bundle(out, src / "critic")
if (src / "prior").is_dir():
    add_prior_to_bundle(out, src / "prior", half=True)
PY
echo "bundle: $OUT"
