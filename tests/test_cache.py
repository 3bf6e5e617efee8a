"""The public cache modes of open()/create() (qemu's -t names): what each one syncs, counted
with the conformance kit's recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.errors import DiskspecError

from .conformance.crash import recording

MiB = 1 << 20


def flushes(path: Path, cache: str, writes: int = 3) -> tuple[int, bytes]:
    ds.create(path, "vhdx", 8 * MiB, block_size=MiB).close()
    with recording(path) as ops, ds.open(path, "r+", cache=cache) as image:
        for i in range(writes):  # each allocates a new block
            image.seek(i * 2 * MiB + 100)
            image.write(bytes([i + 1]) * 5000)
    with ds.open(path) as image:
        return sum(op.kind == "flush" for op in ops), image.read()


def test_cache_modes_sync_what_they_say(tmp_path: Path) -> None:
    counts = {}
    contents = set()
    for mode in ("writeback", "writethrough", "unsafe"):
        counts[mode], content = flushes(tmp_path / f"{mode}.vhdx", mode)
        contents.add(content)
    assert len(contents) == 1  # the same data whatever the mode
    assert counts["unsafe"] == 0
    assert counts["writeback"] > 0  # barriers inside each allocation, and at close
    assert counts["writethrough"] >= counts["writeback"] + 3  # and after every write


def test_an_unknown_cache_mode_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DiskspecError, match="cache must be one of"):
        ds.create(tmp_path / "x.vhdx", "vhdx", MiB, cache="none")
    assert not (tmp_path / "x.vhdx").exists()
