#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: install what the tests need, then run
# the generator check, the linters, the type checker and pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/install-test-deps.sh
echo "== diskspec codegen --check"
diskspec codegen --check
echo "== ruff"
python -m ruff check .
echo "== mypy"
bash tools/typecheck.sh
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
