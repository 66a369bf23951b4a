#!/usr/bin/env bash
# Creates scripts/.venv with the Python reference implementations.
#   bash scripts/setup-python.sh        numpy, scikit-learn, pyarrow
#   bash scripts/setup-python.sh lm     also torch, transformers, peft (large)
#   bash scripts/setup-python.sh readers  also polars, DuckDB, datasets (scripts/check_readers.py)
#   bash scripts/setup-python.sh tensorboard  also tensorboard (scripts/check_tensorboard.py)
#   bash scripts/setup-python.sh bench  lm, and llama-cpp-python (scripts/bench-decode.sh; builds llama.cpp)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements.txt"
if [ "${1:-}" = "lm" ] || [ "${1:-}" = "bench" ]; then
  "$venv/bin/python" -m pip install -q -r "$here/requirements-lm.txt"
fi
if [ "${1:-}" = "bench" ]; then
  # llama.cpp's AMX matmul (built in wherever -march=native finds AMX) crashes on Gemma 3 270M's
  # GGUF (SIGSEGV in ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36, a Sapphire Rapids Xeon):
  # on such CPUs build it for the same instruction sets without the AMX tiles.
  if [ -z "${CMAKE_ARGS:-}" ] && grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo)
    has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)
      -DGGML_F16C=$(has f16c) -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni)
      -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)
      -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    echo "setup-python: this CPU has AMX; llama.cpp is built without it (CMAKE_ARGS=$CMAKE_ARGS)" >&2
  fi
  "$venv/bin/python" -m pip install -q -r "$here/requirements-bench.txt"
fi
if [ "${1:-}" = "readers" ]; then
  "$venv/bin/python" -m pip install -q -r "$here/requirements-readers.txt"
fi
if [ "${1:-}" = "tensorboard" ]; then
  "$venv/bin/python" -m pip install -q -r "$here/requirements-tensorboard.txt"
fi
echo "$venv/bin/python"
