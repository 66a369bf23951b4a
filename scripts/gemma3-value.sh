#!/usr/bin/env bash
# The value of synthetic data on the real pretrained Gemma 3 270M (Q4_K_M GGUF from PyPI), on
# the CPU: a small num_real x num_synthetic grid (docs/protocol.md §5 in miniature) whose source is the
# pretrained model fine-tuned with LoRA on the real rows, so its samples are imperfect for real
# reasons. Prints the grid (thrive report) whichever way it comes out.
# Measured: 31 CPU-minutes (66 min of wall time while other jobs shared the 2 cores; about 16 min
# alone); the table is in docs/value.md.
#
#   bash scripts/gemma3-value.sh [OUT]    (default OUT: checkpoints/gemma3-value)
#   env: NUM_REAL="16 128" NUM_SYNTHETIC="0 16 128" SOURCE_REAL=128 SEEDS="0"
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/checkpoints/gemma3-value}"
mkdir -p "$out/data"
out="$(cd "$out" && pwd)"
list() { echo "[$(echo "$1" | tr -s ' ' ',')]"; }
NUM_REAL=${NUM_REAL:-16 128}
NUM_SYNTHETIC=${NUM_SYNTHETIC:-0 16 128}
SOURCE_REAL=${SOURCE_REAL:-128}
SEEDS=${SEEDS:-0}
gguf="$(bash "$root/scripts/fetch-gemma3.sh" | tail -n 1)"
# THRIVE=path/to/thrive uses a binary already built (as bench-memory-shape.sh does).
if [ -z "${THRIVE:-}" ]; then
  cargo build --release -q -p thrive-cli --manifest-path "$root/Cargo.toml"
fi
thrive="${THRIVE:-$root/target/release/thrive}"

# The demo's HelpSteer2-shaped instruction data: the first 128 training and 32 validation rows.
head -n 128 "$root/data/demo/helpsteer2/train.jsonl" >"$out/data/train.jsonl"
head -n 32 "$root/data/demo/helpsteer2/validation.jsonl" >"$out/data/validation.jsonl"

cat >"$out/run.toml" <<TOML
out = "$out/run"
model = "$gguf"
device = "cpu"

[data]
helpsteer2 = "$out/data"

[value]
num_real = $(list "$NUM_REAL")
num_synthetic = $(list "$NUM_SYNTHETIC")
sources = [0]
source_real = $SOURCE_REAL
seeds = $(list "$SEEDS")

[sft]
lora_rank = 8
lora_alpha = 16.0
lr = 1e-3
warmup_ratio = 0.0
sequences_per_step = 8
micro_batch = 8
epochs = 1
max_len = 128
checkpoint_every = 8

[sampling]
mode = "unconditional"
count = $(echo "$NUM_SYNTHETIC" | tr ' ' '\n' | sort -n | tail -n 1)
max_new_tokens = 64
batch_size = 16
max_attempts = 1024
TOML
time "$thrive" run "$out/run.toml"
"$thrive" report "$out/run"
