#!/usr/bin/env bash
# Lays out oneMKL's static libraries from PyPI (the mkl-static wheel, about 250 MB) for the `mkl`
# cargo feature: ~/.cache/thrive/mkl/lib gets libmkl_intel_lp64.a, libmkl_sequential.a and
# libmkl_core.a, which crates/mkl/build.rs links. Needs only pip and the package registry
# (intel-mkl-src's own download would fail here). Idempotent; prints the library directory.
#   env: THRIVE_MKL_HOME (default ~/.cache/thrive/mkl), MKL_VERSION (default 2026.2.0),
#        PYTHON (default python3)
set -euo pipefail
MKL_VERSION=${MKL_VERSION:-2026.2.0}
home=${THRIVE_MKL_HOME:-$HOME/.cache/thrive/mkl}
mark=$home/.installed-$MKL_VERSION
archives="libmkl_intel_lp64.a libmkl_sequential.a libmkl_core.a"

if [ ! -f "$mark" ]; then
  echo ">> fetching mkl-static==$MKL_VERSION from PyPI into $home" >&2
  if ! "${PYTHON:-python3}" -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "${PYTHON:-python3}" -m pip download -q --no-deps --disable-pip-version-check \
    --only-binary=:all: --platform manylinux_2_28_x86_64 -d "$tmp" "mkl-static==$MKL_VERSION"
  wheel=$(ls "$tmp"/mkl_static-*.whl)
  # Only the three archives of the LP64 + sequential link line (the wheel holds 950 MB in all).
  "${PYTHON:-python3}" - "$wheel" "$tmp/lib" $archives <<'PY'
import os, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    found = {os.path.basename(n): n for n in z.namelist() if os.path.basename(n) in names}
    missing = set(names) - set(found)
    if missing:
        sys.exit(f"setup-mkl: {wheel} lacks {sorted(missing)}")
    for name, member in found.items():
        with z.open(member) as src, open(os.path.join(dest, name), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
  mkdir -p "$home"
  rm -rf "$home/lib"
  mv "$tmp/lib" "$home/lib"
  touch "$mark"
fi
for a in $archives; do test -f "$home/lib/$a"; done
echo "$home/lib"
