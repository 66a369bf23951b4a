#!/usr/bin/env bash
# Benchmark of the discrete setting: the authors' numpy loop (scripts/discrete_reference.py)
# against `thrive discrete`, in the same job, on the same machine. Prints seconds per run and
# the ratio.
#   bash scripts/bench-discrete.sh            (K = 10, n = 1000, Replace until fixation, 100 seeds)
#   OUTCOMES=100 N=100 SEEDS=20 bash scripts/bench-discrete.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUTCOMES=${OUTCOMES:-10} N=${N:-1000} WORKFLOW=${WORKFLOW:-replace} SEEDS=${SEEDS:-100}
PY=scripts/.venv/bin/python
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release -q -p thrive-cli
THRIVE=${CARGO_TARGET_DIR:-target}/release/thrive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "case: K=$OUTCOMES n=$N workflow=$WORKFLOW (until fixation), $SEEDS runs, one at a time"

ref=$("$PY" scripts/discrete_reference.py --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" --seeds "$SEEDS")
echo "$ref" | head -1
ref_s=$(echo "$ref" | sed -n 's/^REFERENCE_SECONDS_PER_RUN=//p')

# thrive: one warm-up run (page cache), then the median of 5 whole-process runs, with one
# thread (as numpy) and with every core (thrive's default).
median_run() {
  local times=()
  "$THRIVE" "$@" --log warn discrete --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" \
    --seeds "0..$SEEDS" --out "$out/bench.parquet"
  for _ in 1 2 3 4 5; do
    local start end
    start=$(date +%s.%N)
    "$THRIVE" "$@" --log warn discrete --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" \
      --seeds "0..$SEEDS" --out "$out/bench.parquet"
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | sed -n 3p
}
for threads in 1 "$(nproc)"; do
  total=$(median_run --threads "$threads")
  ours_s=$(echo "$total / $SEEDS" | bc -l)
  printf 'thrive: %.5f s per run (%s thread(s), start-up and Parquet included, median of 5): %.0fx faster than the reference\n' \
    "$ours_s" "$threads" "$(echo "$ref_s / $ours_s" | bc -l)"
done
