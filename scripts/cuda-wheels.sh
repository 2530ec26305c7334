#!/usr/bin/env bash
# Installs what the kernel compile checks need when no CUDA toolkit is present: NVRTC (with its
# builtins), the CUDA headers (cuda_bf16.h and the crt/ and nv/ headers it includes) and nvdisasm
# (SASS checks), from NVIDIA's wheels on the Python package index, into a cache folder outside
# the repository. NVRTC 13.0 matches the device machines' CUDA 13.0 driver. Prints the folder.
#   SOLAR_CUDA_WHEELS  where to install (default ~/.cache/solar/cuda-13.0)
set -euo pipefail
dest="${SOLAR_CUDA_WHEELS:-$HOME/.cache/solar/cuda-13.0}"
stamp="$dest/.solar-installed-v1"
if [[ ! -f "$stamp" ]]; then
  py="$(command -v python3 || command -v python || true)"
  if [[ -z "$py" ]]; then
    echo "error: python3 is needed to install the NVIDIA wheels (pip)" >&2
    exit 1
  fi
  echo "== installing NVRTC, CUDA headers and nvdisasm wheels into $dest" >&2
  rm -rf "$dest"
  "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$dest" \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvdisasm==13.2.51 >&2
  touch "$stamp"
fi
echo "$dest"
