#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine (idempotent):
#   Debian qemu-utils (qemu-img/qemu-io oracles) and libvhdi-utils,
#   the official Kaitai Struct compiler from npm into .cache/kaitai (git-ignored),
#   the package itself with its test extras.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null || ! command -v vhdiinfo >/dev/null; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils libvhdi-utils >/dev/null
fi

ksc="$root/.cache/kaitai"
if [ ! -f "$ksc/node_modules/kaitai-struct-compiler/package.json" ] \
   || ! grep -q '"version": "0.11.0"' "$ksc/node_modules/kaitai-struct-compiler/package.json"; then
  mkdir -p "$ksc"
  [ -f "$ksc/package.json" ] || echo '{"name": "diskspec-ksc", "private": true}' > "$ksc/package.json"
  (cd "$ksc" && npm install --silent --no-audit --no-fund kaitai-struct-compiler@0.11.0 js-yaml@4.1.0)
fi

python -m pip install --quiet --disable-pip-version-check -e ".[test]"
