#!/usr/bin/env bash
# One fine-tuning job, thrive against PyTorch + PEFT, in the same run: Gemma 3 270M (the real
# weights, scripts/fetch-gemma3.sh), STEPS steps of SEQS sequences of about LEN tokens, micro-batch
# MICRO, on the CPU. Prints each side's seconds a step (median, first step excluded), target
# tokens/s and peak RSS (/usr/bin/time -v), and the ratios.
#
# usage: scripts/bench-train.sh [MODE=lora|full] [LEN=250] [STEPS=3] [SEQS=8] [MICRO=8]
#   THRIVE_FLAGS="--gradient-checkpointing"   extra flags for thrive sft
#   PEER=f32|bf16-autocast|none               the PyTorch side's precision, or skip it
#   FEATURES=mkl                              cargo features of thrive's build (mkl: run
#                                             scripts/setup-mkl.sh first); THRIVE_FLAGS="--dtype bf16"
#                                             then trains with AMX bf16 products
# needs: the Python venv with the LM packages (scripts/setup-python.sh lm) unless PEER=none.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-lora}
LEN=${2:-250}
STEPS=${3:-3}
SEQS=${4:-8}
MICRO=${5:-8}
PEER=${PEER:-f32}
PY=${PY:-scripts/.venv/bin/python}
gguf="$(bash scripts/fetch-gemma3.sh | tail -n 1)"
model_dir="${gguf%.gguf}-thrive"
FEATURES=${FEATURES:-}
cargo build --release -q -p thrive-cli ${FEATURES:+--features "$FEATURES"}
thrive=target/release/thrive
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Converts the GGUF into a model directory once (both sides read the same f32 weights).
"$thrive" generate --model "$gguf" --device cpu --max-new-tokens 1 --prompt "Hello" >/dev/null
"$PY" scripts/train_bench_peft.py data "$model_dir" "$WORK" "$STEPS" "$SEQS" "$LEN"

peak() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1" | awk '{printf "%.2f", $1 / 1048576}'; }
# median of the step times after the first, and target tokens a step
summary() { python3 -c '
import json, statistics, sys
d = json.loads(sys.stdin.read())
s = d["step_seconds"][1:] or d["step_seconds"]
t = statistics.mean(d["tokens_per_step"])
print(f"{statistics.median(s):.2f} {t / statistics.median(s):.1f}")'; }

full=""; [ "$MODE" = full ] && full="--full"
echo "== thrive sft ($MODE, $SEQS x ~$LEN tokens, micro-batch $MICRO, ${THRIVE_FLAGS:-no extra flags})"
RUST_LOG=thrive_sft=debug NO_COLOR=1 /usr/bin/time -v -o "$WORK/thrive.time" "$thrive" sft --model "$gguf" \
  --train "$WORK/train.jsonl" --valid "$WORK/valid.jsonl" --out "$WORK/thrive" $full --lora-rank 16 \
  --lora-alpha 32 --sequences-per-step "$SEQS" --micro-batch "$MICRO" --max-len 2048 --device cpu \
  --checkpoint-every 0 ${THRIVE_FLAGS:-} 2>"$WORK/thrive.log" >/dev/null || { tail -n 20 "$WORK/thrive.log"; exit 1; }
grep ' step step=' "$WORK/thrive.log" | grep -o 'seconds=[0-9.]*\|targets=[0-9]*' | paste -d' ' - - |
  python3 -c 'import sys, json; r=[dict(kv.split("=") for kv in l.split()) for l in sys.stdin]
print(json.dumps({"step_seconds": [float(x["seconds"]) for x in r], "tokens_per_step": [int(x["targets"]) for x in r]}))' >"$WORK/thrive.json"
read -r ours_s ours_tps < <(summary <"$WORK/thrive.json")
ours_mem=$(peak "$WORK/thrive.time")
echo "thrive: $ours_s s a step, $ours_tps tokens/s, peak RSS $ours_mem GB"

if [ "$PEER" = none ]; then exit 0; fi
echo "== PyTorch + PEFT ($PEER)"
/usr/bin/time -v -o "$WORK/peer.time" "$PY" scripts/train_bench_peft.py train "$model_dir" "$WORK/train.jsonl" \
  "$SEQS" "$MICRO" "$MODE" "$PEER" >"$WORK/peer.json" 2>"$WORK/peer.log" || { tail -n 20 "$WORK/peer.log"; exit 1; }
read -r peer_s peer_tps < <(summary <"$WORK/peer.json")
peer_mem=$(peak "$WORK/peer.time")
echo "peer:   $peer_s s a step, $peer_tps tokens/s, peak RSS $peer_mem GB"
echo "ratio thrive/peer: tokens/s $(echo "scale=2; $ours_tps / $peer_tps" | bc), peak RSS $(echo "scale=2; $ours_mem / $peer_mem" | bc)"
