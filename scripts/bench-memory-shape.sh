#!/usr/bin/env bash
# Peak memory of one training step at a real model's shape, extrapolated to the whole model:
# random weights at the Gemma-2-2B shape (scripts/make_shape_model.py) with L1 and L2 decoder
# layers and the full 256,000-token vocabulary, one step of MB sequences of SEQ tokens on the
# CPU, peak RSS from /usr/bin/time -v. Memory is affine in the number of layers, so
#   peak(26) = peak(L1) + (26 - L1) * (peak(L2) - peak(L1)) / (L2 - L1).
# The CPU's peak RSS stands in for the GPU's memory: the same tensors are allocated on either
# (plus the CUDA context and allocator slack on a GPU).
#
# usage: scripts/bench-memory-shape.sh [SEQ=512] [L1=2] [L2=3]
#   MODES="lora full" MBS="1 8" CKPT="no yes" DTYPES="f32 bf16" restrict the grid;
#   THRIVE=path/to/thrive uses that binary instead of building target/release/thrive.
# Prints one line a configuration and a Markdown table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${1:-512}
L1=${2:-2}
L2=${3:-3}
LAYERS=26
PY=${PY:-scripts/.venv/bin/python}
if [ -z "${THRIVE:-}" ]; then
  cargo build --release -q -p thrive-cli
fi
thrive=${THRIVE:-target/release/thrive}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for l in "$L1" "$L2"; do
  "$PY" scripts/make_shape_model.py "$WORK/m$l" gemma2-2b "$l" >/dev/null 2>&1
done
"$PY" scripts/train_bench_peft.py data "$WORK/m$L1" "$WORK" 1 8 "$SEQ" 2>/dev/null

peak() { # LAYERS MODE MB CKPT DTYPE -> GB
  local full="" ck=""
  [ "$2" = full ] && full=--full
  [ "$4" = yes ] && ck=--gradient-checkpointing
  rm -rf "$WORK/out"
  head -n "$3" "$WORK/train.jsonl" >"$WORK/step.jsonl"
  /usr/bin/time -v -o "$WORK/time" "$thrive" sft --model "$WORK/m$1" --train "$WORK/step.jsonl" \
    --valid "$WORK/valid.jsonl" --out "$WORK/out" $full $ck --dtype "$5" --sequences-per-step "$3" \
    --micro-batch "$3" --max-len 4096 --device cpu --checkpoint-every 0 >/dev/null 2>"$WORK/log" ||
    { tail -n 3 "$WORK/log" >&2; echo nan; return; }
  sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time" | awk '{printf "%.2f", $1 / 1048576}'
}
rows=()
for mode in ${MODES:-lora full}; do
  for mb in ${MBS:-1 8}; do
    for ck in ${CKPT:-no yes}; do
      for dt in ${DTYPES:-f32 bf16}; do
        a=$(peak "$L1" "$mode" "$mb" "$ck" "$dt")
        b=$(peak "$L2" "$mode" "$mb" "$ck" "$dt")
        est=$(python3 -c "a,b=$a,$b; print(round(a + ($LAYERS - $L1) * (b - a) / ($L2 - $L1), 1))")
        line="| $mode | $mb | $ck | $dt | $a | $b | $est |"
        echo "$line"
        rows+=("$line")
      done
    done
  done
done
echo
echo "Gemma-2-2B shape, sequence $SEQ, one step, peak RSS in GB ($(lscpu | sed -n 's/^Model name: *//p'))"
echo "| mode | micro-batch | checkpointing | dtype | $L1 layers | $L2 layers | 26 layers (extrapolated) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
