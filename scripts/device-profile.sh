#!/usr/bin/env bash
# Where a thrive training step spends its time on the GPU machine (after scripts/device-check.sh
# showed the rates): GPU utilisation while a LoRA and a full fine-tuning run train, and Nsight
# Compute's per-kernel durations of the LoRA run, at the Gemma-2-2B shape cut to a few layers.
# Writes $OUT/profile.txt (everything, as it goes) and $OUT/kernels.csv.
#   bash scripts/device-profile.sh [LAYERS=4]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-checkpoints/device-profile}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
layers=${1:-4}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
log=$OUT/profile.txt; : >"$log"
say() { echo "$*" | tee -a "$log"; }
THRIVE=target/cuda/release/thrive
[ -x "$THRIVE" ] || { gzip -dc "$THRIVE.gz" >"$WORK/thrive" && chmod +x "$WORK/thrive" && THRIVE=$WORK/thrive; }
site=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
export LD_LIBRARY_PATH=$site/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 scripts/make_shape_model.py "$WORK/shape" gemma2-2b "$layers" bfloat16 cuda >/dev/null 2>>"$log"
python3 scripts/train_bench_peft.py data "$WORK/shape" "$WORK" 4 8 512 2>>"$log"
sft() { # LABEL EXTRA...: a run of 4 steps of 8 x 512, utilisation sampled every 100 ms
  local label=$1; shift
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 >"$WORK/util" &
  local smi=$!
  local t0; t0=$(date +%s.%N)
  RUST_LOG=thrive_sft=debug NO_COLOR=1 timeout 120 "$THRIVE" sft --model "$WORK/shape" --train "$WORK/train.jsonl" \
    --valid "$WORK/valid.jsonl" --out "$WORK/run-$label" --no-export --sequences-per-step 8 --micro-batch 8 \
    --max-len 4096 --device cuda --checkpoint-every 0 "$@" 2>"$WORK/sft.log" >/dev/null
  say "== $label: exit $?, $(python3 -c "import time; print(round(time.time() - $t0, 1))") s wall"
  kill $smi; wait $smi 2>/dev/null
  grep -o 'seconds=[0-9.]*' "$WORK/sft.log" | tr '\n' ' ' | tee -a "$log"; echo | tee -a "$log"
  grep -i error "$WORK/sft.log" | head -n 3 | tee -a "$log"
  python3 -c 'import sys, statistics
u=[int(l.split(",")[0]) for l in open(sys.argv[1]) if l.strip()]
print("utilisation %% over %d samples: median %s, mean %.0f, share of samples at >= 90%%: %.2f" % (len(u), statistics.median(u), statistics.mean(u), sum(x >= 90 for x in u) / max(len(u), 1)))' "$WORK/util" | tee -a "$log"
}
sft lora
sft full --full
sft lora-ckpt --gradient-checkpointing
say "== ncu: per-kernel durations of the LoRA run (first 2500 kernels)"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
say "ncu: ${ncu:-none}"
if [ -n "$ncu" ]; then
  timeout 200 "$ncu" --clock-control none --metrics gpu__time_duration.sum --launch-count 2500 -f -o "$WORK/prof" \
    "$THRIVE" sft --model "$WORK/shape" --train "$WORK/train.jsonl" --valid "$WORK/valid.jsonl" --out "$WORK/run-ncu" \
    --no-export --sequences-per-step 8 --micro-batch 8 --max-len 4096 --device cuda --checkpoint-every 0 \
    >"$WORK/ncu.log" 2>&1
  say "ncu exit $?"; tail -n 5 "$WORK/ncu.log" | tee -a "$log"
  "$ncu" -i "$WORK/prof.ncu-rep" --page raw --csv --metrics gpu__time_duration.sum >"$OUT/kernels.csv" 2>>"$log"
  python3 - "$OUT/kernels.csv" <<'PY' | tee -a "$log"
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
tot = collections.Counter(); cnt = collections.Counter()
for r in rows[1:]:  # the first row holds the units
    try: t = float(r["gpu__time_duration.sum"])
    except (KeyError, ValueError): continue
    name = r.get("Kernel Name", "?")[:90]
    tot[name] += t; cnt[name] += 1
all_t = sum(tot.values())
print(f"{len(rows) - 1} kernels, {all_t / 1e6:.1f} ms of kernel time (units: {rows[0].get('gpu__time_duration.sum')})")
for name, t in tot.most_common(25):
    print(f"{t / all_t * 100:5.1f} %  {t / 1e6:8.2f} ms  {cnt[name]:6d}x  {name}")
PY
fi
