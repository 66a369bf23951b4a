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
  "$venv/bin/python" -m pip install -q -r "$here/requirements-bench.txt"
fi
if [ "${1:-}" = "readers" ]; then
  "$venv/bin/python" -m pip install -q -r "$here/requirements-readers.txt"
fi
if [ "${1:-}" = "tensorboard" ]; then
  "$venv/bin/python" -m pip install -q -r "$here/requirements-tensorboard.txt"
fi
echo "$venv/bin/python"
