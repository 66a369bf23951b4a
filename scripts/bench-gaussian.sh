#!/usr/bin/env bash
# Benchmark of the Gaussian setting: the authors' numpy loop against `thrive gaussian`,
# in the same job, on the same machine. Prints seconds per run and the ratio, then times
# the paper's full 7,500-run grid.
#   bash scripts/bench-gaussian.sh            (d = 100, n = 1000, Accumulate, 100 generations)
#   SEEDS=5 DIM=10 N=100 WORKFLOW=replace bash scripts/bench-gaussian.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIM=${DIM:-100} N=${N:-1000} GENERATIONS=${GENERATIONS:-100} WORKFLOW=${WORKFLOW:-accumulate} SEEDS=${SEEDS:-3}
PY=scripts/.venv/bin/python
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release -q -p thrive-cli
THRIVE=target/release/thrive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "case: d=$DIM n=$N generations=$GENERATIONS workflow=$WORKFLOW, $SEEDS runs, one run at a time"

ref=$("$PY" scripts/gaussian_reference.py --dim "$DIM" --n "$N" --generations "$GENERATIONS" --workflow "$WORKFLOW" --seeds "$SEEDS")
echo "$ref" | head -1
ref_s=$(echo "$ref" | sed -n 's/^REFERENCE_SECONDS_PER_RUN=//p')

for root in cholesky eigen; do  # cholesky is the default
  start=$(date +%s.%N)
  "$THRIVE" --threads 1 --log warn gaussian --dim "$DIM" --n "$N" --generations "$GENERATIONS" \
    --workflow "$WORKFLOW" --seeds "0..$SEEDS" --root "$root" --out "$out/bench.parquet"
  end=$(date +%s.%N)
  ours_s=$(echo "($end - $start) / $SEEDS" | bc -l)
  printf 'thrive --root %-8s %.4f s per run (1 thread, start-up and Parquet included): %.0fx faster than the reference\n' \
    "$root" "$ours_s" "$(echo "$ref_s / $ours_s" | bc -l)"
done

if [ "${GRID:-1}" = 1 ]; then
  start=$(date +%s.%N)
  for root in cholesky eigen; do
    start=$(date +%s.%N)
    "$THRIVE" --log warn gaussian --grid paper --root "$root" --out "$out/paper.parquet"
    end=$(date +%s.%N)
    printf 'paper grid (7,500 runs x 100 generations, all %s cores, --root %s): %.1f s\n' "$(nproc)" "$root" "$(echo "$end - $start" | bc -l)"
  done
fi
