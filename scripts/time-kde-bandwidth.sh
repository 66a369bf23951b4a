#!/usr/bin/env bash
# The per-cell timings of docs/performance.md's "KDE bandwidth grid" section: one thread, moons,
# n = 1000, one seed; a fixed bandwidth (0.1) over all three workflows at T = 100 and T = 1,000
# generations, and Scott's rule under Accumulate at T = 50, 100 and 200 (quadratic in T).
#   bash scripts/time-kde-bandwidth.sh          (builds target/release/thrive; THRIVE=path uses that binary)
# Run it on an otherwise idle machine: the figures are wall-clock seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${THRIVE:-}" ]; then
  cargo build --release -q -p thrive-cli
  THRIVE=target/release/thrive
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
timed() { # label, then thrive kde arguments
  local label=$1
  shift
  local start end
  start=$(date +%s.%N)
  "$THRIVE" --threads 1 --log warn kde --dataset moons --n 1000 --seeds 0 --out "$out/t.parquet" "$@" >/dev/null
  end=$(date +%s.%N)
  printf '%-48s %7.1f s\n' "$label" "$(echo "$end - $start" | bc -l)"
}
for t in 100 1000; do
  timed "h = 0.1, all three workflows, T = $t" --bandwidth 0.1 --workflow all --generations "$t"
done
for t in 50 100 200; do
  timed "scott, accumulate, T = $t" --bandwidth scott --workflow accumulate --generations "$t"
done
