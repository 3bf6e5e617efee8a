#!/usr/bin/env bash
# mypy over the package as it is imported (diskspec.formats, .codegen, .runtime), the tests and
# the benchmarks, in one run with the same strict config. The package folders are mapped by
# setuptools, so give mypy the same layout as a tree of symlinks; tests/ is a package (relative
# imports) and goes in the tree too. The bench scripts run from bench/ and import each other as
# top-level modules (`from common import ...`), so bench/ is on mypy's path and each script is
# checked as the module it is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/.cache/typecheck"
rm -rf "$tree" && mkdir -p "$tree/diskspec"
for pkg in formats codegen runtime; do ln -s "$root/$pkg" "$tree/diskspec/$pkg"; done
ln -s "$root/tests" "$tree/tests"
bench=()
for script in "$root"/bench/*.py; do bench+=(-m "$(basename "$script" .py)"); done
cd "$tree"
MYPYPATH="$root/bench" exec python -m mypy --config-file "$root/pyproject.toml" --explicit-package-bases \
  -p diskspec.formats -p diskspec.codegen -p diskspec.runtime -p tests "${bench[@]}" "$@"
