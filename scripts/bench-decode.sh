#!/usr/bin/env bash
# Decoding speed of thrive on the real Gemma 3 270M (scripts/fetch-gemma3.sh) against its peers,
# in one job: greedy, exactly NEW_TOKENS new tokens per sequence (EOS ignored), the same prompt.
#   batch 1:     thrive --dtype gguf and --dtype f32 against llama.cpp (llama-cpp-python) on the
#                same Q4_K_M file;
#   batch BATCH: thrive --dtype gguf and --dtype f32 against Hugging Face `generate` (f32) on the
#                model directory converted from that file (the same weights, dequantized).
# Prints each side's tokens/s and peak RSS (/usr/bin/time -v), then the ratios. Model loading is
# outside the timings (each side times its own decoding) but inside the peak memory.
#
# usage: scripts/bench-decode.sh [NEW_TOKENS=128] [BATCH=16]
#        SAMPLING=paper scripts/bench-decode.sh 512 16
#            the paper's sampling instead of greedy (temperature 1, top-p 1, no top-k) on both
#            sides, batch BATCH only (thrive against HF generate; llama.cpp is not needed)
#        FEATURES=mkl scripts/bench-decode.sh
#            builds with oneMKL (scripts/setup-mkl.sh first) and adds thrive --dtype bf16-mixed
#            (bf16 weights, f32 activations, AMX products) to every comparison
# needs: a release build (made here; BIN=path/to/thrive uses another and skips the build: not a
#        test-profile binary, whose dependencies keep debug assertions and decode at half speed), the
#        Python venv with the LM packages and llama-cpp-python (bash scripts/setup-python.sh bench).
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${1:-128}
BATCH=${2:-16}
PROMPT=${PROMPT:-The capital of France is}
GGUF=${THRIVE_GEMMA3_GGUF:-${THRIVE_CACHE:-$HOME/.cache/thrive}/gemma3-270m/gemma-3-270m-q4_k_m.gguf}
PY=${PY:-scripts/.venv/bin/python} # in a git worktree: PY=/path/to/main/scripts/.venv/bin/python
[ -f "$GGUF" ] || { echo "$GGUF is missing: bash scripts/fetch-gemma3.sh" >&2; exit 1; }
SAMPLING=${SAMPLING:-greedy}
case $SAMPLING in greedy | paper) ;; *) echo "SAMPLING=$SAMPLING: expected greedy or paper" >&2; exit 2 ;; esac
FEATURES=${FEATURES:-}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p thrive-cli ${FEATURES:+--features "$FEATURES"}
  BIN=${CARGO_TARGET_DIR:-target}/release/thrive
fi
# thrive's precisions: bf16-mixed where the binary has MKL's mixed products.
DTYPES=(gguf f32)
"$BIN" --version | grep -q oneMKL && DTYPES+=(bf16-mixed)
# Converts the GGUF into its model directory once (HF generate reads that).
"$BIN" generate --model "$GGUF" --prompt x --max-new-tokens 1 --device cpu >/dev/null 2>&1
DIR=${GGUF%.gguf}-thrive
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"

# run NAME CMD...: the tokens/s of CMD's last "tokens/s" line and its peak RSS in GB, into $WORK/NAME.
run() {
  local name=$1
  shift
  /usr/bin/time -v "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  local rate rss
  rate=$(cat "$WORK/$name.out" "$WORK/$name.err" | grep -E 'tokens/s' | tail -1 | sed -E 's/.*[(= ]([0-9.]+) tokens\/s.*/\1/')
  rss=$(grep 'Maximum resident set size' "$WORK/$name.err" | awk '{printf "%.2f", $NF / 1048576}')
  echo "$rate $rss" >"$WORK/$name"
  printf '%-34s %8s tokens/s   peak %s GB\n' "$name" "$rate" "$rss"
}
prompts=()
for _ in $(seq "$BATCH"); do prompts+=(--prompt "$PROMPT"); done
thrive() { run "$1" "$BIN" generate --model "$GGUF" --device cpu --max-new-tokens "$NEW" --ignore-eos "${@:2}"; }

if [ "$SAMPLING" = paper ]; then
  echo "batch $BATCH, the paper's sampling (temperature 1, top-p 1), $NEW new tokens each:"
  for d in "${DTYPES[@]}"; do
    thrive "thrive --dtype $d, batch $BATCH" --dtype "$d" --temperature 1 --top-p 1 "${prompts[@]}"
  done
  run "hf generate, batch $BATCH" "$PY" scripts/decode_bench_peers.py hf "$DIR" "$PROMPT" "$NEW" "$BATCH" sample
  for d in "${DTYPES[@]}"; do
    a="thrive --dtype $d, batch $BATCH"
    b="hf generate, batch $BATCH"
    echo "$a / $b: speed $(echo "scale=2; $(cut -d' ' -f1 "$WORK/$a") / $(cut -d' ' -f1 "$WORK/$b")" | bc)x," \
      "peak memory $(echo "scale=2; $(cut -d' ' -f2 "$WORK/$a") / $(cut -d' ' -f2 "$WORK/$b")" | bc)x"
  done
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi

echo "batch 1, greedy, $NEW new tokens:"
for d in "${DTYPES[@]}"; do thrive "thrive --dtype $d" --dtype "$d" --prompt "$PROMPT"; done
# llama.cpp is the batch-1 peer; without llama-cpp-python its comparisons are left out, said so.
LLAMA=1
if "$PY" -c 'import llama_cpp' 2>/dev/null; then
  run "llama.cpp" "$PY" scripts/decode_bench_peers.py llama "$GGUF" "$PROMPT" "$NEW"
else
  LLAMA=0
  echo "llama.cpp: skipped, llama-cpp-python is not installed (bash scripts/setup-python.sh bench)"
fi
echo "batch $BATCH, greedy, $NEW new tokens each:"
for d in "${DTYPES[@]}"; do thrive "thrive --dtype $d, batch $BATCH" --dtype "$d" "${prompts[@]}"; done
run "hf generate, batch $BATCH" "$PY" scripts/decode_bench_peers.py hf "$DIR" "$PROMPT" "$NEW" "$BATCH"

ratio() { echo "scale=2; $(cut -d' ' -f1 "$WORK/$1") / $(cut -d' ' -f1 "$WORK/$2")" | bc; }
mem() { echo "scale=2; $(cut -d' ' -f2 "$WORK/$1") / $(cut -d' ' -f2 "$WORK/$2")" | bc; }
pairs=()
[ "$LLAMA" = 1 ] && for d in "${DTYPES[@]}"; do pairs+=("thrive --dtype $d|llama.cpp"); done
for d in "${DTYPES[@]}"; do pairs+=("thrive --dtype $d, batch $BATCH|hf generate, batch $BATCH"); done
for pair in "${pairs[@]}"; do
  a=${pair%|*}
  b=${pair#*|}
  echo "$a / $b: speed $(ratio "$a" "$b")x, peak memory $(mem "$a" "$b")x"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
