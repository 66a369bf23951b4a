#!/usr/bin/env bash
# Sampling throughput of thrive against Hugging Face `generate` on the same random Gemma 2, in the
# same job: greedy, exactly NEW_TOKENS new tokens per sequence, PROMPTS sequences in one batch.
#
# usage: scripts/bench-sampler.sh [SIZE=small|medium] [PROMPTS=16] [NEW_TOKENS=128]
# needs: the Python venv with the LM packages (scripts/setup-python.sh lm).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-small}
PROMPTS=${2:-16}
NEW=${3:-128}
PY=scripts/.venv/bin/python
cargo build --release -q -p thrive-sampler --example sample_bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
theirs=$("$PY" scripts/sampler_bench_hf.py "$SIZE" "$WORK/model" "$PROMPTS" "$NEW" 2>/dev/null | tail -1)
echo "$theirs"
ours=$(target/release/examples/sample_bench "$WORK/model" "$PROMPTS" "$NEW")
echo "$ours"
a=$(echo "$ours" | sed -E 's/.*= ([0-9.]+) tokens.*/\1/')
b=$(echo "$theirs" | sed -E 's/.*= ([0-9.]+) tokens.*/\1/')
echo "$SIZE, $PROMPTS x $NEW new tokens: thrive / hf generate = $(echo "scale=2; $a / $b" | bc)"
