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

start=$(date +%s.%N)
"$THRIVE" --threads 1 --log warn discrete --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" \
  --seeds "0..$SEEDS" --out "$out/bench.parquet"
end=$(date +%s.%N)
ours_s=$(echo "($end - $start) / $SEEDS" | bc -l)
printf 'thrive: %.5f s per run (1 thread, start-up and Parquet included): %.0fx faster than the reference\n' \
  "$ours_s" "$(echo "$ref_s / $ours_s" | bc -l)"
