"""The README's main-job command runs the built-in example end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("$ diskspec dissect", "$ diskspec convert", "$ diskspec compare", "$ diskspec info"):
        assert step in out
    assert "Images are identical." in out
    assert "3 payload block(s)" in out and "file format: vpc" in out


def test_demo_help_prints_help_and_runs_nothing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and "usage: diskspec demo" in proc.stdout and "--keep" in proc.stdout
    assert "$ diskspec" not in proc.stdout and list(tmp_path.iterdir()) == []


def test_demo_prints_no_path_of_deleted_files_and_keeps_with_keep(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the temporary directory is gone: no line may name a path inside it
    assert tempfile.gettempdir() not in proc.stdout and "diskspec-demo-" not in proc.stdout
    assert "now removed" in proc.stdout
    keep = tmp_path / "kept"
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo", "--keep", str(keep)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in keep.iterdir()) == ["example.vhd", "example.vhdx"]
    assert str(keep.resolve()) in proc.stdout
    # the kept files are real images: qemu-img reads the VHD the demo made
    if shutil.which("qemu-img"):
        out = subprocess.run(["qemu-img", "compare", "-f", "vhdx", "-F", "vpc",
                              str(keep / "example.vhdx"), str(keep / "example.vhd")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    again = subprocess.run([sys.executable, "-m", "diskspec.runtime", "demo", "--keep", str(keep)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr and again.stderr.count("\n") == 1
