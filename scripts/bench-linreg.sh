#!/usr/bin/env bash
# Benchmark of the linear-regression setting: the authors' numpy loop (scripts/linreg_reference.py:
# pinv of the whole stacked design every generation) against `thrive linreg`, in the same job,
# on the same machine. Prints seconds per run and the ratio.
#   bash scripts/bench-linreg.sh            (d = 100, n = 1000, Accumulate, 100 generations)
#   SEEDS=3 DIM=10 N=100 WORKFLOW=replace bash scripts/bench-linreg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIM=${DIM:-100} N=${N:-1000} GENERATIONS=${GENERATIONS:-100} WORKFLOW=${WORKFLOW:-accumulate}
SEEDS=${SEEDS:-1} OURS_SEEDS=${OURS_SEEDS:-20}
PY=scripts/.venv/bin/python
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release -q -p thrive-cli
THRIVE=${CARGO_TARGET_DIR:-target}/release/thrive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "case: d=$DIM n=$N generations=$GENERATIONS workflow=$WORKFLOW; reference $SEEDS runs, thrive $OURS_SEEDS runs, one at a time"

ref=$("$PY" scripts/linreg_reference.py --dim "$DIM" --n "$N" --generations "$GENERATIONS" --workflow "$WORKFLOW" --seeds "$SEEDS")
echo "$ref" | head -1
ref_s=$(echo "$ref" | sed -n 's/^REFERENCE_SECONDS_PER_RUN=//p')

start=$(date +%s.%N)
"$THRIVE" --threads 1 --log warn linreg --dim "$DIM" --n "$N" --generations "$GENERATIONS" \
  --workflow "$WORKFLOW" --seeds "0..$OURS_SEEDS" --out "$out/bench.parquet"
end=$(date +%s.%N)
ours_s=$(echo "($end - $start) / $OURS_SEEDS" | bc -l)
printf 'thrive: %.4f s per run (1 thread, start-up and Parquet included): %.0fx faster than the reference\n' \
  "$ours_s" "$(echo "$ref_s / $ours_s" | bc -l)"
