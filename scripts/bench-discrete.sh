#!/usr/bin/env bash
# Benchmark of the discrete setting: the authors' numpy loop (scripts/discrete_reference.py)
# against `thrive discrete`, in the same job, on the same machine. Prints seconds per run and
# the ratios: thrive's runs against the reference's loop (both timed inside the process), and
# thrive's whole process against that same loop.
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

# thrive: one warm-up run (page cache), then 5 whole-process runs, with one thread (as numpy)
# and with every core (thrive's default). Two figures each, medians of the 5:
# - the runs alone, timed inside thrive (its "N runs in S s" log line): what the reference
#   times, its loop without interpreter start-up or writing results;
# - the whole process, start-up and the Parquet file included.
median_run() {
  local loops=() walls=()
  "$THRIVE" "$@" --log warn discrete --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" \
    --seeds "0..$SEEDS" --out "$out/bench.parquet"
  for _ in 1 2 3 4 5; do
    local start end log
    start=$(date +%s.%N)
    log=$("$THRIVE" "$@" --log info discrete --outcomes "$OUTCOMES" --n "$N" --workflow "$WORKFLOW" \
      --seeds "0..$SEEDS" --out "$out/bench.parquet" 2>&1)
    end=$(date +%s.%N)
    walls+=("$(echo "$end - $start" | bc -l)")
    loops+=("$(echo "$log" | sed -n 's/.* runs in \([0-9.]*\) s$/\1/p')")
  done
  echo "$(printf '%s\n' "${loops[@]}" | sort -g | sed -n 3p) $(printf '%s\n' "${walls[@]}" | sort -g | sed -n 3p)"
}
for threads in 1 "$(nproc)"; do
  read -r loop total < <(median_run --threads "$threads")
  loop_s=$(echo "$loop / $SEEDS" | bc -l)
  ours_s=$(echo "$total / $SEEDS" | bc -l)
  printf 'thrive, %s thread(s): runs alone %.5f s per run: %.0fx the reference loop; whole process (start-up and Parquet included) %.5f s per run: %.0fx (medians of 5)\n' \
    "$threads" "$loop_s" "$(echo "$ref_s / $loop_s" | bc -l)" "$ours_s" "$(echo "$ref_s / $ours_s" | bc -l)"
done
