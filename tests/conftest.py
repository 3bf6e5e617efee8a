"""Shared fixtures: the external oracles (qemu-img, qemu-io) and image makers.

A missing oracle is a failure, never a skip: the test command installs them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "formats"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run tools/install-test-deps.sh")
    return path


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {proc.stderr or proc.stdout}")
    return proc.stdout


@pytest.fixture(scope="session")
def qemu_img() -> str:
    return require_tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    return require_tool("qemu-io")


@pytest.fixture
def make_image(tmp_path: Path, qemu_img: str, qemu_io: str) -> Callable[..., Path]:
    """make_image("vpc", "64M", "subformat=fixed", writes=[("0x5a", 0, 4096)]) -> path."""

    counter = iter(range(1_000_000))

    def make(fmt: str, size: str, options: str = "", writes: tuple[tuple[str, int, int], ...] = ()
             ) -> Path:
        path = tmp_path / f"img{next(counter)}.{fmt}"
        args = [qemu_img, "create", "-q", "-f", fmt]
        if options:
            args += ["-o", options]
        run(*args, str(path), size)
        for pattern, offset, length in writes:
            run(qemu_io, "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", str(path))
        return path

    return make
