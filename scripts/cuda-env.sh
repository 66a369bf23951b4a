#!/usr/bin/env bash
# Sets up the CUDA 13.0 toolkit for building candle's `cuda` feature on a machine without a GPU
# (no driver, no network beyond the package registries), and exports the environment that
# cudarc's and candle-kernels' build scripts read. Source it:  . scripts/cuda-env.sh
#
# - nvcc, headers, cudart, cuBLAS, cuRAND, NVRTC and CCCL come from the PyPI metapackage
#   cuda-toolkit==13.0.2, installed once into $CANDLE_CUDA_HOME (about 1.2 GB).
# - The driver library is not in any wheel: a generated stub with soname libcuda.so.1 satisfies
#   the linker, so the real driver is loaded on the GPU machine. Never put lib/stubs on
#   LD_LIBRARY_PATH.
# - nvcc 13.0, not newer: candle ships PTX that the driver compiles at load time, and PTX from
#   nvcc 13.1+ is refused by a 13.0 driver (580) with CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
#   cudarc 0.19 knows CUDA versions up to 13.x.
#   env: CANDLE_CUDA_HOME (default ~/.cache/candle-cuda-13.0), CUDA_COMPUTE_CAP (default 90:
#        H100/H200), PYTHON (default python3)
CUDA_TOOLKIT_VERSION=13.0.2
CANDLE_CUDA_HOME=${CANDLE_CUDA_HOME:-$HOME/.cache/candle-cuda-13.0}
_cuda_root=$CANDLE_CUDA_HOME/py/nvidia/cu13
_cuda_mark=$CANDLE_CUDA_HOME/.installed-$CUDA_TOOLKIT_VERSION

if [ ! -f "$_cuda_mark" ]; then
  echo ">> installing the CUDA $CUDA_TOOLKIT_VERSION toolkit wheels into $CANDLE_CUDA_HOME (~1.2 GB)" >&2
  mkdir -p "$CANDLE_CUDA_HOME"
  rm -rf "$CANDLE_CUDA_HOME/py"
  if ! "${PYTHON:-python3}" -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  "${PYTHON:-python3}" -m pip install -q --no-cache-dir --disable-pip-version-check \
    --target "$CANDLE_CUDA_HOME/py" \
    "cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,curand,nvrtc,cccl]==$CUDA_TOOLKIT_VERSION"
  test -x "$_cuda_root/bin/nvcc"
  # Unversioned names for the linker (-lcudart looks for libcudart.so).
  for l in cudart cublas cublasLt nvrtc; do ln -sfn "lib$l.so.13" "$_cuda_root/lib/lib$l.so"; done
  ln -sfn libcurand.so.10 "$_cuda_root/lib/libcurand.so"
  # The driver stub: every cu* function named in cuda.h, soname libcuda.so.1.
  mkdir -p "$_cuda_root/lib/stubs"
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$_cuda_root/include/cuda.h" | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$_cuda_root/lib/stubs/cuda_stub.c"
  cc -shared -fPIC -o "$_cuda_root/lib/stubs/libcuda.so" "$_cuda_root/lib/stubs/cuda_stub.c" \
    -Wl,-soname,libcuda.so.1
  ln -sfn libcuda.so "$_cuda_root/lib/stubs/libcuda.so.1"
  touch "$_cuda_mark"
fi

# Read by cudarc's build script (CUDA_ROOT/CUDA_HOME/CUDA_PATH, CUDARC_CUDA_VERSION) and by
# cudaforge in candle-kernels' (NVCC, CUDA_COMPUTE_CAP, CUDAFORGE_THREADS).
export CUDA_ROOT=$_cuda_root CUDA_HOME=$_cuda_root CUDA_PATH=$_cuda_root
export NVCC=$_cuda_root/bin/nvcc
export PATH=$_cuda_root/bin:$PATH
export LIBRARY_PATH=$_cuda_root/lib:$_cuda_root/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
