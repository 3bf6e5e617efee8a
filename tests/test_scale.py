"""Cost grows with the data, not the disk (issue 15, first part): on a large sparse image,
extents() yields one extent per run of equal table entries, found in bulk (tables.run_end),
never one per block; the runs are right. Counts, not timings."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds
from diskspec.runtime.extent import State
from diskspec.runtime.tables import run_end

GiB, TiB, MiB = 1 << 30, 1 << 40, 1 << 20


def test_run_end_finds_the_first_different_entry() -> None:
    table = array("I", [0xFFFFFFFF] * 1000 + [7, 7, 0xFFFFFFFF])
    assert run_end(table, 0, len(table)) == 1000
    assert run_end(table, 1000, len(table)) == 1002
    assert run_end(table, 1002, len(table)) == 1003
    assert run_end(table, 10, 20) == 20  # bounded by stop
    assert run_end(table, 5, 5) == 5
    wide = array("Q", [2] * 5 + [2 | (1 << 20)] + [0])  # equal low bytes, different entry
    assert run_end(wide, 0, len(wide)) == 5


@pytest.mark.parametrize(("fmt", "size", "options"), [
    ("vpc", 2040 * GiB, {"block_size": 2 * MiB, "force_size": True}),
    ("vhdx", 64 * TiB, {"block_size": 64 * MiB}),
], ids=["vhd-2040G", "vhdx-64T"])
def test_a_large_sparse_disk_has_one_extent_per_run(tmp_path: Path, fmt: str, size: int,
                                                    options: dict[str, Any]) -> None:
    path = tmp_path / f"big.{fmt}"
    with ds.create(path, fmt, size, **options) as image:
        bs = image.engine.block_size  # type: ignore[attr-defined]
        image.write(b"a" * 4096)
        image.seek(size // 2)
        image.write(b"b" * (3 * bs))  # three neighbouring blocks
    with ds.open(path) as image:
        runs = [(e.offset, e.length, e.state) for e in image.extents()]
        data = [r for r in runs if r[2] is State.DATA]
        assert [(o, n) for o, n, _ in data][0] == (0, bs)
        assert sum(n for _, n, _ in data) == 4 * bs
        assert all(r[2] is State.ZERO for r in runs if r[2] is not State.DATA)
        assert len(runs) <= 6, f"{len(runs)} extents for 4 allocated blocks: one per block?"
        assert sum(n for _, n, _ in runs) == image.size
        image.seek(size // 2)
        assert image.read(3 * bs) == b"b" * (3 * bs)
