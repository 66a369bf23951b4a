#!/usr/bin/env bash
# Benchmark of the pool: import 1M synthetic rows, then scan the Accumulate training view over
# all of them, against pyarrow reading the same files in the same job; peak memory of each scan
# at two pool sizes shows that a scan's memory does not grow with the pool.
#
# usage: scripts/bench-pool.sh [ROWS=1000000] [GENERATIONS=10]
# needs: the Python venv (scripts/setup-python.sh) and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
GENS=${2:-10}
PY=scripts/.venv/bin/python
cargo build --release -q -p thrive-pool --example pool_bench
BIN=target/release/examples/pool_bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

rss() { grep "Maximum resident" "$1" | awk '{print $NF}'; }

/usr/bin/time -v "$BIN" write "$WORK/pool" "$ROWS" "$GENS" 2>"$WORK/write.time" | tee "$WORK/write.out"
echo "write peak RSS: $(rss "$WORK/write.time") kB"
du -sh "$WORK/pool"

# Scan the view at generation 2 (real + 1 batch) and at GENS+1 (real + every batch).
for G in 2 $((GENS + 1)); do
  sync
  "$BIN" scan "$WORK/pool" "$G" >/dev/null # warm the page cache: both readers then read from memory
  /usr/bin/time -v "$BIN" scan "$WORK/pool" "$G" 2>"$WORK/scan.time" | tee "$WORK/scan-$G.out"
  echo "  thrive scan (generation $G) peak RSS: $(rss "$WORK/scan.time") kB"
  /usr/bin/time -v "$PY" scripts/pool_read_pyarrow.py "$WORK/pool" "$G" 2>"$WORK/py.time" | tee "$WORK/py-$G.out"
  echo "  pyarrow scan (generation $G) peak RSS: $(rss "$WORK/py.time") kB"
done
G=$((GENS + 1))
ours=$(grep -o 'text_gbps=[0-9.]*' "$WORK/scan-$G.out" | cut -d= -f2)
theirs=$(grep -o 'text_gbps=[0-9.]*' "$WORK/py-$G.out" | cut -d= -f2)
echo "text throughput over $ROWS synthetic rows: thrive $ours GB/s, pyarrow $theirs GB/s, ratio $(echo "scale=2; $ours / $theirs" | bc)"
