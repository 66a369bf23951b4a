#!/usr/bin/env bash
# Builds the `thrive` binary with CUDA on a machine without a GPU (../shared/cuda.md): the CUDA
# 13.0 toolkit from PyPI wheels, a link-time stub for the driver, sm_90 (H100/H200).
# Output: target/cuda/release/thrive (stripped; its own target dir so the CPU build is kept),
# small enough to carry to a GPU machine.
#
# usage: scripts/build-cuda.sh [extra cargo args]
#   env: CUDA_BUILD_SCRIPT   the shared recipe (default: ../shared/scripts/cuda-build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${CUDA_BUILD_SCRIPT:-../shared/scripts/cuda-build.sh}
if [ ! -f "$recipe" ]; then
  echo "error: $recipe not found (set CUDA_BUILD_SCRIPT to the CUDA build recipe)" >&2
  exit 1
fi
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
export CARGO_FEATURES=cuda CARGO_TARGET_DIR=target/cuda
bash "$recipe" -p thrive-cli "$@" # the recipe builds --release
strip target/cuda/release/thrive
ls -la target/cuda/release/thrive
echo "on the GPU machine: target/cuda/release/thrive sft --device cuda ..."
