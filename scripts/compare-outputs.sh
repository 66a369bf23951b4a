#!/usr/bin/env bash
# Byte-compares what two thrive binaries write for the same jobs: the demo (pool, models,
# results, figures), a Gaussian grid and a KDE run, each with its report and TensorBoard files.
# For refactors that must not change behaviour: build the old commit's binary elsewhere, then
#
#   bash scripts/compare-outputs.sh OLD_BINARY NEW_BINARY [WORK_DIR]
#
# Every file under both output trees is compared with cmp. Files that record wall-clock facts
# (manifests' timings and host, logs, TensorBoard event files whose records carry wall time)
# cannot be byte-equal between two processes; they are listed as "timed" and compared with their
# time fields removed instead. Exits non-zero when any other file differs or is missing.
# DEMO_GENERATIONS (default 4, the demo's own) shortens the demo. The binaries run from WORK_DIR/old
# and WORK_DIR/new, so relative defaults (checkpoints/, results/) land there.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [WORK_DIR]" >&2; exit 2; }
old=$(realpath "$1") new=$(realpath "$2")
work=${3:-$(mktemp -d)}
generations=${DEMO_GENERATIONS:-4}
for b in "$old" "$new"; do [ -x "$b" ] || { echo "$0: $b is not an executable" >&2; exit 2; }; done

jobs_for() { # $1: binary, $2: output root
  local bin=$1 root=$2
  mkdir -p "$root"
  (cd "$root" &&
    "$bin" --log warn gaussian --dim 2,10 --n 10,100 --generations 20 --seeds 0..5 --out gaussian/results.parquet \
      --report --tensorboard gaussian/tb >gaussian.txt &&
    "$bin" --log warn kde --dataset moons,circles --bandwidth 0.1,scott --n 32,100 --generations 20 --seeds 0..5 \
      --out kde/results.parquet --report --tensorboard kde/tb >kde.txt &&
    "$bin" --log warn demo --generations "$generations" --out demo >demo.txt)
}

# A side whose tree is complete from an earlier call (marked .complete) is not run again, so the
# old binary's outputs can be made once while the new one is still being built.
for side in old new; do
  bin=${!side}
  if [ -f "$work/$side/.complete" ]; then echo "== $side: reusing $work/$side"; continue; fi
  echo "== $side: $bin"
  rm -rf "${work:?}/$side"
  jobs_for "$bin" "$work/$side"
  touch "$work/$side/.complete"
done

# Fields that hold wall-clock time, the host, the commit built or the binary's own path: dropped
# before comparing a "timed" file.
strip_times() {
  sed -E -e 's/"(seconds|[a-z_]*_seconds|started|started_unix|finished|elapsed|wall_time|time|host|hostname|pid|binary|created|git_commit)": *("[^"]*"|[-0-9.eE+]+|null)/"\1": _/g' \
    -e "s|\"$old\"|\"BINARY\"|g; s|\"$new\"|\"BINARY\"|g" "$1"
}

status=0 same=0 timed=0
while IFS= read -r rel; do
  a="$work/old/$rel" b="$work/new/$rel"
  if [ ! -e "$b" ]; then echo "MISSING in new: $rel"; status=1; continue; fi
  if cmp -s "$a" "$b"; then same=$((same + 1)); continue; fi
  case "$rel" in
    *.json | *.jsonl | *.txt | *.log)
      if diff -q <(strip_times "$a") <(strip_times "$b") >/dev/null; then
        timed=$((timed + 1)); echo "timed (equal without wall-clock fields): $rel"; continue
      fi ;;
    */tb/* | *tfevents*)
      timed=$((timed + 1)); echo "timed (TensorBoard records carry wall time; not compared): $rel"; continue ;;
  esac
  echo "DIFFERS: $rel"; status=1
done < <(cd "$work/old" && find . -type f ! -name .complete | sed 's|^\./||' | sort)
while IFS= read -r rel; do
  [ -e "$work/old/$rel" ] || { echo "EXTRA in new: $rel"; status=1; }
done < <(cd "$work/new" && find . -type f ! -name .complete | sed 's|^\./||' | sort)

echo "== $same files byte-identical, $timed equal but for wall-clock fields; outputs in $work"
[ $status = 0 ] && echo "== same behaviour" || echo "== DIFFERENT"
exit $status
