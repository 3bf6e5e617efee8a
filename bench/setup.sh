#!/usr/bin/env bash
# Install what bench/read.py compares against (idempotent; not needed by the tests):
#   dissect.hypervisor (pure Python VHD reader), libvhdi-python (module pyvhdi),
#   qemu-img (the convert reference), and diskspec itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v qemu-img >/dev/null; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
fi

python -m pip install --quiet --disable-pip-version-check dissect.hypervisor libvhdi-python
python -c "import diskspec.runtime" 2>/dev/null \
  || python -m pip install --quiet --disable-pip-version-check -e .
