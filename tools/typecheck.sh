#!/usr/bin/env bash
# mypy over the package as it is imported (diskspec.formats, .codegen, .runtime): the folders
# are mapped by setuptools, so give mypy the same layout as a tree of symlinks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/.cache/typecheck"
rm -rf "$tree" && mkdir -p "$tree/diskspec"
for pkg in formats codegen runtime; do ln -s "$root/$pkg" "$tree/diskspec/$pkg"; done
cd "$tree"
exec python -m mypy --config-file "$root/pyproject.toml" --explicit-package-bases \
  -p diskspec.formats -p diskspec.codegen -p diskspec.runtime "$@"
