#!/usr/bin/env bash
# Create .venv and install nfldm with everything it needs, on a fresh Debian/Ubuntu machine.
# Idempotent: re-running only installs what is missing. Used by `make setup` (and so by `make demo`/`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Open3D links libusb-1.0 at import time; headless EGL rendering needs the GL/EGL loaders.
need_apt=()
ldconfig -p | grep -q 'libusb-1.0.so.0' || need_apt+=(libusb-1.0-0)
ldconfig -p | grep -q 'libEGL.so.1' || need_apt+=(libegl1)
ldconfig -p | grep -q 'libGL.so.1' || need_apt+=(libgl1)
ldconfig -p | grep -q 'libgomp.so.1' || need_apt+=(libgomp1)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
fi
# torch first, pinned: on this machine class these wheels lie on local disk (a plain `torch` would
# download a multi-GB CUDA build); torchvision must match or diffusers/lightning fail to import.
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch (takes a few minutes)"
  "$VENV/bin/pip" install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
echo "[setup] installing nfldm (editable) with dev extras"
"$VENV/bin/pip" install -q -e ".[dev]"
# The export tests load their output with the nuScenes devkit. Its metadata caps numpy below 2 (the modules it uses
# run on numpy 2): installed without its requirements, whose imported part the dev extra brings, so that numpy
# stays where the rest of the environment has it.
if ! "$VENV/bin/python" -c "import nuscenes" 2>/dev/null; then
  "$VENV/bin/pip" install -q --no-deps "nuscenes-devkit==${NUSCENES_DEVKIT_VERSION:-1.2.0}"
fi
echo "[setup] done: $VENV"
