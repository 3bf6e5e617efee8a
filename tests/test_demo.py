"""The README's main-job command runs the built-in example end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("$ diskspec dissect", "$ diskspec convert", "$ diskspec compare", "$ diskspec info"):
        assert step in out
    assert "Images are identical." in out
    assert "3 payload block(s)" in out and "file format: vpc" in out
