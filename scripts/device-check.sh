#!/usr/bin/env bash
# The GPU check, in one call on the device machine (an H200 with nvcc 13.0 and python3 with
# torch, transformers, peft; no Rust, no network). Carry the CUDA binary built here
# (scripts/build-cuda.sh -> target/cuda/release/thrive); everything else it reads is in the
# working tree. Writes, as it goes, $OUT/device-check.jsonl (one JSON object a measurement) and
# $OUT/device-check.md (the same as a table), in this order:
#   1. nvidia-smi; 2. ldd and the library path (the CUDA libraries of torch's wheels);
#   3. CUDA against CPU on the tiny Gemma 2 and Gemma 3 fixtures in f32 and bf16 (logits, loss,
#      LoRA gradients, greedy tokens: thrive check-device);
#   4. LoRA at the Gemma-2-2B shape (random weights, made there with torch), sequence 512, over
#      the micro-batch ladder 1 2 4 8 (stops at the first out-of-memory), thrive and PyTorch +
#      PEFT in the same call: tokens/s, peak GPU memory, model FLOP utilisation (790 TFLOP/s);
#   5. full fine-tuning memory at that shape; 6. sampling 64 prompts x 512 new tokens, thrive
#      against Hugging Face generate.
#
#   bash scripts/device-check.sh          on the device (wants under 8 minutes)
#   bash scripts/device-check.sh --cpu    every part on tiny shapes on this machine's CPU, with
#                                         target/release/thrive, to rehearse the script
# env: OUT (default checkpoints/device-check), THRIVE (the binary), PY (python3), DEADLINE
#      (seconds; later parts are skipped past it), SKIP_PEER=1 (thrive's side only: a rerun after
#      a change, beside the peer's figures of an earlier call), PEER_LADDER (the peer's
#      micro-batches, default the same ladder as thrive's), LADDER and FULL_MB (on the device:
#      the LoRA ladder, default "1 2 4 8", and the full fine-tuning micro-batches, "1 8")
set -uo pipefail
cd "$(dirname "$0")/.."
cpu=0; [ "${1:-}" = --cpu ] && cpu=1
OUT=${OUT:-checkpoints/device-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
jsonl=$OUT/device-check.jsonl md=$OUT/device-check.md
: >"$jsonl"
printf '| part | what | value |\n|---|---|---|\n' >"$md"
WORK=$(mktemp -d)
# On any exit the small logs come back with the results (the device's time is too short to rerun
# a part only to read why it failed).
# The device tool brings back at most 8 files, so every log goes into one: logs.txt.
keep_log() { { echo "=== $1"; cat "$2"; } >>"$OUT/logs.txt" 2>/dev/null; }
: >"$OUT/logs.txt"
# (The training runs' logs are kept as each run ends; these are the rest.)
trap 'for f in parity make gen hf; do [ -f "$WORK/$f.log" ] && keep_log "$f.log" "$WORK/$f.log"; done
rm -rf "$WORK"; [ -n "${smi_pid:-}" ] && kill "$smi_pid" 2>/dev/null' EXIT
started=$(date +%s)

# Every command has a time limit (seconds) so that one slow or hung part cannot take the call's
# whole budget; a part that would start past DEADLINE is skipped and says so.
if [ $cpu = 1 ]; then
  THRIVE=${THRIVE:-target/release/thrive} PY=${PY:-scripts/.venv/bin/python}
  device=cpu shape=tiny layers=2 seq=64 ladder="1 2" full_mb="1 2" gen_prompts=8 gen_tokens=32 peer=f32 hf_device=cpu
  DEADLINE=${DEADLINE:-900} t_make=120 t_parity=300 t_sft=120 t_gen=120
else
  THRIVE=${THRIVE:-target/cuda/release/thrive} PY=${PY:-python3}
  # carried gzipped when over the 64 MiB that can travel (scripts/build-cuda.sh)
  if [ ! -x "$THRIVE" ] && [ -f "$THRIVE.gz" ]; then
    gzip -dc "$THRIVE.gz" >"$WORK/thrive" && chmod +x "$WORK/thrive" && THRIVE=$WORK/thrive
  fi
  device=cuda shape=gemma2-2b layers=26 seq=512 ladder=${LADDER:-1 2 4 8} full_mb=${FULL_MB:-1 8} gen_prompts=64 gen_tokens=512
  peer=cuda-bf16 hf_device=cuda
  DEADLINE=${DEADLINE:-450} t_make=90 t_parity=90 t_sft=75 t_gen=75
fi
lim() { timeout -k 5 "$@"; }
# why RC LOG: what a failed command said (its first error line, else its last line)
why() {
  local line
  line=$(grep -m1 -i 'error' "$2" || tail -n 1 "$2")
  [ "$1" = 124 ] && line="timed out; $line"
  echo "exit $1: $line" | cut -c1-240
}
# past SECONDS: true when fewer than SECONDS are left before DEADLINE
past() { [ $(($(date +%s) - started + $1)) -gt "$DEADLINE" ]; }

# record PART WHAT VALUE [JSON]: one table row and one JSON line
record() {
  printf '| %s | %s | %s |\n' "$1" "$2" "$3" >>"$md"
  python3 -c 'import json,sys; v=sys.argv[4] if len(sys.argv)>4 and sys.argv[4] else None
print(json.dumps({"part": sys.argv[1], "what": sys.argv[2], "value": sys.argv[3], "data": json.loads(v) if v else None}))' \
    "$1" "$2" "$3" "${4:-}" >>"$jsonl"
  echo "[$(($(date +%s) - started)) s] $1: $2 = $3"
}

echo "== 1. the machine"
if [ $cpu = 0 ]; then
  nvidia-smi | tee "$OUT/nvidia-smi.txt"
  record machine gpu "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
else
  record machine cpu "$(lscpu | sed -n 's/^Model name: *//p') ($(nproc) threads)"
fi

echo "== 2. libraries"
if [ $cpu = 0 ]; then
  # torch's wheels carry the CUDA libraries (nvidia/*/lib); the driver is the machine's own.
  site=$("$PY" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    found=$(find "$site" /usr/local/cuda* /usr/lib /usr/lib64 -name "$lib*" 2>/dev/null | head -n 1)
    [ -n "$found" ] && LD_LIBRARY_PATH=$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
  record libraries LD_LIBRARY_PATH "${LD_LIBRARY_PATH:-}"
fi
ldd "$THRIVE" | tee "$OUT/ldd.txt"
missing=$(ldd "$THRIVE" | grep -c 'not found')
record libraries "missing after setup" "$missing"

echo "== 3. device against CPU on the tiny fixtures"
if lim $t_parity "$THRIVE" check-device --device "$device" --dtype f32,bf16 \
  --model crates/sft/tests/fixtures/tiny-gemma2 --model crates/sft/tests/fixtures/tiny-gemma3 >"$WORK/parity.jsonl" 2>"$WORK/parity.log"; then
  verdict=pass
else
  verdict="FAIL: $(why $? "$WORK/parity.log")"
fi
while read -r line; do
  record parity "$(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["model_type"], d["dtype"])')" \
    "$(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("logits %.1e loss %.1e grads %.1e greedy %d/%d" % (d["logits_rel"], d["loss_rel"], d["grads_rel"], d["greedy_same_prefix"], d["greedy_tokens"]))')" "$line"
done <"$WORK/parity.jsonl"
record parity verdict "$verdict"

echo "== 4. LoRA at the $shape shape ($layers layers), sequence $seq"
lim $t_make "$PY" scripts/make_shape_model.py "$WORK/shape" "$shape" "$layers" bfloat16 "$hf_device" >/dev/null 2>"$WORK/make.log" || { tail -n 5 "$WORK/make.log"; exit 1; }
params=$("$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]+"/config.json")); h,f,l,v=c["hidden_size"],c["intermediate_size"],c["num_hidden_layers"],c["vocab_size"]
a=c["num_attention_heads"]*c["head_dim"]; k=c["num_key_value_heads"]*c["head_dim"]
print(l*(h*(2*a+2*k)+3*h*f) + v*h)' "$WORK/shape")
# 4 steps of the largest micro-batch; each micro-batch MB trains on the first 4 MB rows, so
# every run takes 4 steps (the first, warm-up, is left out of the rates).
"$PY" scripts/train_bench_peft.py data "$WORK/shape" "$WORK" 4 8 "$seq" 2>/dev/null
rows_for() { head -n $((4 * $1)) "$WORK/train.jsonl" >"$WORK/train-$1.jsonl"; echo "$WORK/train-$1.jsonl"; }

# gpu_peak CMD...: runs CMD while sampling the GPU's memory; prints the peak in MiB
gpu_peak() {
  if [ $cpu = 1 ]; then
    lim $t_sft /usr/bin/time -v -o "$WORK/time" "$@" || return 1
    sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time" | awk '{printf "%d\n", $1 / 1024}' >"$WORK/peak"
    return 0
  fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$WORK/smi" &
  smi_pid=$!
  lim $t_sft "$@"; local rc=$?
  kill $smi_pid; wait $smi_pid 2>/dev/null; smi_pid=
  sort -n "$WORK/smi" | tail -n 1 >"$WORK/peak"
  return $rc
}
# step_rate LOG: median seconds a step (first excluded) and target tokens a step, from the step
# lines only (the debug log's forward and backward lines carry seconds of their own)
step_rate() {
  grep ' step step=' "$1" | grep -o ' seconds=[0-9.]*\| targets=[0-9]*' | paste -d' ' - - | python3 -c 'import sys, statistics
r=[dict(kv.split("=") for kv in l.split()) for l in sys.stdin]
s=[float(x["seconds"]) for x in r][1:] or [float(x["seconds"]) for x in r]
print(statistics.median(s), statistics.mean(int(x["targets"]) for x in r))'
}
thrive_sft() { # MODE MB EXTRA...
  local mode=$1 mb=$2; shift 2
  local full=""; [ "$mode" = full ] && full=--full
  rm -rf "$WORK/run"
  RUST_LOG=thrive_sft=debug NO_COLOR=1 gpu_peak "$THRIVE" sft --model "$WORK/shape" --train "$(rows_for "$mb")" \
    --valid "$WORK/valid.jsonl" --out "$WORK/run" --no-export $full --lora-rank 16 --lora-alpha 32 --sequences-per-step "$mb" \
    --micro-batch "$mb" --max-len 4096 --device "$device" --checkpoint-every 0 "$@" 2>"$WORK/sft.log" >/dev/null
}
# record_rate WHAT MB SECONDS TOKENS: tokens/s, the peak memory of the last gpu_peak, and the
# model FLOP utilisation (4 x params x tokens a step: forward, input and LoRA gradients,
# recomputation aside) against the H200's 790 TFLOP/s in bf16
record_rate() {
  local mem tps mfu
  mem=$(cat "$WORK/peak")
  tps=$(python3 -c "print(round($4 / $3, 1))")
  mfu=$(python3 -c "print(round(100 * 4 * $params * $4 / $3 / 790e12, 2))")
  record "$1" "micro-batch $2" "$tps tokens/s, peak $mem MiB, MFU $mfu %" \
    "{\"tokens_per_s\": $tps, \"peak_mib\": $mem, \"mfu_percent\": $mfu}"
}
peer_sft() { # MB
  gpu_peak "$PY" scripts/train_bench_peft.py train "$WORK/shape" "$(rows_for "$1")" "$1" "$1" lora "$peer" \
    >"$WORK/peer.json" 2>"$WORK/peer.log"
}
peer_rate() { # the peer's JSON: median seconds a step (first excluded) and target tokens a step
  python3 -c 'import json,sys,statistics; d=json.load(open(sys.argv[1])); s=d["step_seconds"][1:] or d["step_seconds"]
print(statistics.median(s), statistics.mean(d["tokens_per_step"]))' "$1"
}
# Each side climbs the ladder until its first failure (an out-of-memory, as a rule).
for mb in $ladder; do
  past 60 && { record "lora thrive" "micro-batch $mb" "skipped: past the deadline"; break; }
  thrive_sft lora "$mb"; rc=$?
  keep_log "lora thrive, micro-batch $mb" "$WORK/sft.log"
  [ $rc = 0 ] || { record "lora thrive" "micro-batch $mb" "failed: $(why $rc "$WORK/sft.log")"; break; }
  # shellcheck disable=SC2046
  record_rate "lora thrive" "$mb" $(step_rate "$WORK/sft.log")
done
for mb in ${PEER_LADDER:-$ladder}; do
  [ "${SKIP_PEER:-0}" = 1 ] && { record "lora peft" all "skipped (SKIP_PEER=1)"; break; }
  past 60 && { record "lora peft" "micro-batch $mb" "skipped: past the deadline"; break; }
  peer_sft "$mb"; rc=$?
  keep_log "lora peft, micro-batch $mb" "$WORK/peer.log"
  [ $rc = 0 ] || { record "lora peft" "micro-batch $mb" "failed: $(why $rc "$WORK/peer.log")"; break; }
  # shellcheck disable=SC2046
  record_rate "lora peft" "$mb" $(peer_rate "$WORK/peer.json")
  [ $cpu = 0 ] && record "lora peft" "micro-batch $mb torch allocated" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peak_gpu_bytes"] >> 20)' "$WORK/peer.json") MiB"
done

echo "== 5. full fine-tuning memory at the $shape shape"
for mb in $full_mb; do
  for flags in "" "--gradient-checkpointing"; do
    past 60 && { record "full thrive" "micro-batch $mb ${flags:-no checkpointing}" "skipped: past the deadline"; continue; }
    thrive_sft full "$mb" $flags; rc=$?
    keep_log "full thrive, micro-batch $mb $flags" "$WORK/sft.log"
    if [ $rc = 0 ]; then
      read -r secs tokens < <(step_rate "$WORK/sft.log")
      record "full thrive" "micro-batch $mb ${flags:-no checkpointing}" "peak $(cat "$WORK/peak") MiB, $(python3 -c "print(round($tokens / $secs, 1))") tokens/s"
    else
      record "full thrive" "micro-batch $mb ${flags:-no checkpointing}" "failed: $(why $rc "$WORK/sft.log")"
    fi
  done
done

echo "== 6. sampling $gen_prompts prompts x $gen_tokens new tokens"
prompts=(); for _ in $(seq "$gen_prompts"); do prompts+=(--prompt ""); done
if past 30; then
  record "sampling thrive" "$gen_prompts x $gen_tokens" "skipped: past the deadline"
elif lim $t_gen "$THRIVE" generate --model "$WORK/shape" --device "$device" --temperature 1 --top-p 1 --ignore-eos \
  --max-new-tokens "$gen_tokens" "${prompts[@]}" >/dev/null 2>"$WORK/gen.log"; then
  record "sampling thrive" "$gen_prompts x $gen_tokens" "$(grep -o '[0-9.]* tokens/s' "$WORK/gen.log" | tail -n 1)"
else
  record "sampling thrive" "$gen_prompts x $gen_tokens" "failed: $(tail -n 1 "$WORK/gen.log" | cut -c1-200)"
fi
if [ "${SKIP_PEER:-0}" = 1 ]; then
  record "sampling hf generate" "$gen_prompts x $gen_tokens" "skipped (SKIP_PEER=1)"
elif past 20; then
  record "sampling hf generate" "$gen_prompts x $gen_tokens" "skipped: past the deadline"
elif lim $t_gen "$PY" scripts/train_bench_peft.py generate "$WORK/shape" "$gen_prompts" "$gen_tokens" "$hf_device" >"$WORK/hf.json" 2>"$WORK/hf.log"; then
  record "sampling hf generate" "$gen_prompts x $gen_tokens" "$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["tokens_per_s"], 1), "tokens/s")' "$WORK/hf.json")"
else
  record "sampling hf generate" "$gen_prompts x $gen_tokens" "failed: $(tail -n 1 "$WORK/hf.log" | cut -c1-200)"
fi
record done seconds "$(($(date +%s) - started))"
cat "$md"
