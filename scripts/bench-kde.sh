#!/usr/bin/env bash
# Benchmark of the KDE setting: the authors' scikit-learn loop against `thrive kde`, in the
# same job, on the same machine. Prints seconds per run and the ratio, then (GRID=1) times
# the paper's main grid (18,000 runs) and (BANDWIDTH=1) a slice of the bandwidth grid.
#   bash scripts/bench-kde.sh                         (moons, h = 0.1, n = 1000, Accumulate, 100 generations)
#   SEEDS=2 DATASET=swiss_roll BANDWIDTH_H=0.5 bash scripts/bench-kde.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-moons} H=${BANDWIDTH_H:-0.1} N=${N:-1000} GENERATIONS=${GENERATIONS:-100}
WORKFLOW=${WORKFLOW:-accumulate} SEEDS=${SEEDS:-2}
PY=scripts/.venv/bin/python
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release -q -p thrive-cli
THRIVE=target/release/thrive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "case: $DATASET h=$H n=$N generations=$GENERATIONS workflow=$WORKFLOW, $SEEDS runs, one run at a time"

ref=$("$PY" scripts/kde_reference.py --dataset "$DATASET" --bandwidth "$H" --n "$N" --generations "$GENERATIONS" \
  --workflow "$WORKFLOW" --seeds "$SEEDS")
echo "$ref" | head -1
ref_s=$(echo "$ref" | sed -n 's/^REFERENCE_SECONDS_PER_RUN=//p')

# Ten times the runs for ours, so start-up and the Parquet write are amortised as in a sweep.
runs=$((SEEDS * 10))
start=$(date +%s.%N)
"$THRIVE" --threads 1 --log warn kde --dataset "$DATASET" --bandwidth "$H" --n "$N" --generations "$GENERATIONS" \
  --workflow "$WORKFLOW" --seeds "0..$runs" --out "$out/bench.parquet" --report | sed -n '/^nll/,/^$/p'
end=$(date +%s.%N)
ours_s=$(echo "($end - $start) / $runs" | bc -l)
printf 'thrive: %.4f s per run (1 thread, start-up, Parquet and report included): %.0fx faster than the reference\n' \
  "$ours_s" "$(echo "$ref_s / $ours_s" | bc -l)"

if [ "${GRID:-0}" = 1 ]; then
  start=$(date +%s.%N)
  "$THRIVE" --log warn kde --grid main --out "$out/main.parquet"
  end=$(date +%s.%N)
  printf 'main grid (18,000 runs x 100 generations, all %s cores): %.0f s\n' "$(nproc)" "$(echo "$end - $start" | bc -l)"
fi

if [ "${BANDWIDTH:-0}" = 1 ]; then
  # The bandwidth grid's cost: one seed of every cell at growing generation counts.
  for g in 50 100 200; do
    start=$(date +%s.%N)
    "$THRIVE" --log warn kde --grid bandwidth --generations "$g" --seeds 0..1 --out "$out/bw.parquet"
    end=$(date +%s.%N)
    printf 'bandwidth grid, 1 seed (660 runs) x %d generations: %.1f s\n' "$g" "$(echo "$end - $start" | bc -l)"
  done
fi
