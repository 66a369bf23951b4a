#!/usr/bin/env bash
# Builds the `thrive` binary with CUDA on a machine without a GPU: the CUDA 13.0 toolkit from
# PyPI wheels and a link-time stub for the driver (scripts/cuda-env.sh), sm_90 (H100/H200).
# Output: target/cuda/release/thrive (stripped; its own target dir so the CPU build is kept),
# small enough to carry to a GPU machine.
#
# usage: scripts/build-cuda.sh [extra cargo args]
#        scripts/build-cuda.sh --check   only lints the workspace with the `cuda` feature (clippy,
#                                        -D warnings): what keeps the CUDA path from rotting. CI
#                                        does not run it (about 26 CPU-minutes on 2 cores; see
#                                        docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-env.sh
echo ">> nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2
if [ "${1:-}" = --check ]; then
  shift
  CARGO_TARGET_DIR=target/cuda cargo clippy --locked --workspace --all-targets --features thrive-cli/cuda "$@" -- -D warnings
  exit
fi
CARGO_TARGET_DIR=target/cuda cargo build --release --locked -p thrive-cli --features cuda "$@"
strip target/cuda/release/thrive
ls -la target/cuda/release/thrive
# The device tool carries at most 64 MiB: the binary (about 100 MB with candle's kernels) travels
# gzipped (about 31 MB); scripts/device-check.sh unpacks it.
if [ "$(stat -c %s target/cuda/release/thrive)" -gt $((64 << 20)) ]; then
  gzip -6 -c target/cuda/release/thrive >target/cuda/release/thrive.gz.tmp
  mv target/cuda/release/thrive.gz.tmp target/cuda/release/thrive.gz
  ls -la target/cuda/release/thrive.gz
fi
cat >&2 <<'NOTE'
>> On the GPU machine the binary needs libcuda.so.1 (the driver), libcudart.so.13,
   libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13 (see ldd);
   scripts/device-check.sh finds them in torch's nvidia wheels and sets LD_LIBRARY_PATH.
NOTE
