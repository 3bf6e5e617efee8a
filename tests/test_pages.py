"""Metadata tables in pages (issue 15): open reads no table page, the page cache never holds
more than its limit (pages counted, not timed), pages an engine changed are never dropped
before they are written, and what the tables say is unchanged (qemu-img as the oracle)."""

from __future__ import annotations

import random
import subprocess
from array import array
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds
from diskspec.runtime.backend import FileBackend
from diskspec.runtime.errors import DiskspecError
from diskspec.runtime.extent import State
from diskspec.runtime.pages import MIN_CACHE, PAGE_BYTES, PageCache, PagedTable

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40


def _table(tmp_path: Path, entries: list[int], width: int = 4, big: bool = True,
           limit: int = MIN_CACHE) -> PagedTable:
    raw = array({4: "I", 8: "Q"}[width], entries)
    if big:
        raw.byteswap()
    path = tmp_path / "table"
    path.write_bytes(b"\0" * 512 + raw.tobytes())
    return PagedTable(FileBackend(path), 512, len(entries), width, big, PageCache(limit))


def test_entries_runs_and_encoding(tmp_path: Path) -> None:
    per = PAGE_BYTES // 4
    entries = [0xFFFFFFFF] * (3 * per) + [5, 6] + [0xFFFFFFFF] * 10 + [9] * (per + 3)
    table = _table(tmp_path, entries)
    assert len(table) == len(entries) and list(table) == entries
    assert table[3 * per + 1] == 6 and table[len(entries) - 1] == 9
    assert table.run_end(0, len(table)) == 3 * per  # across three pages
    assert table.run_end(3 * per + 2, len(table)) == 3 * per + 12
    assert table.run_end(3 * per + 12, len(table)) == len(table)
    assert table.run_end(5, 9) == 9
    assert [i for i, _ in table.other_positions(0xFFFFFFFF)] == \
        [i for i, e in enumerate(entries) if e != 0xFFFFFFFF]
    raw = (tmp_path / "table").read_bytes()[512:]
    assert table.encode(0, len(table)) == raw
    assert table.encode(3 * per, 3 * per + 2) == raw[12 * per : 12 * per + 8]
    with pytest.raises(IndexError):
        table[len(entries)]


def test_runs_can_skip_interleaved_entries(tmp_path: Path) -> None:
    # VHDX: every 5th entry is a sector bitmap entry that does not count for payload runs
    entries = [2 if i % 5 != 4 else 0 for i in range(40000)]
    entries[30001] = 6 | (7 << 20)
    table = _table(tmp_path, entries, width=8, big=False)
    assert table.run_end(0, len(table)) == 4  # the bitmap entry ends a plain run
    assert table.run_end(0, len(table), skip=(5, 4)) == 30001
    assert table.run_end(30002, len(table), skip=(5, 4)) == len(table)


def test_the_cache_holds_no_more_than_its_limit(tmp_path: Path) -> None:
    per = PAGE_BYTES // 4
    table = _table(tmp_path, list(range(20 * per)))
    rng = random.Random(1)
    for _ in range(2000):
        i = rng.randrange(len(table))
        assert table[i] == i
    assert table.cache.peak <= MIN_CACHE
    assert len(table.loaded()) <= MIN_CACHE // PAGE_BYTES
    assert table.cache.loads > MIN_CACHE // PAGE_BYTES  # pages were dropped and read again


def test_changed_pages_stay_until_settled(tmp_path: Path) -> None:
    per = PAGE_BYTES // 4
    table = _table(tmp_path, [0] * (10 * per))
    table[1] = 11
    table.fill(3 * per, 3 * per + 10, 7)
    for i in range(0, 10 * per, per):  # walk every page: the changed ones must not go
        assert table[i + 5] in (0, 11, 7)
    assert table[1] == 11 and table[3 * per + 9] == 7
    table.settle()  # (the changes are not in the file: now they may be dropped)
    for i in range(0, 10 * per, per):
        table[i + 5]  # noqa: B018 - loads the page
    assert table[1] == 0  # read again from the file


def test_a_bad_cache_size_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.raw"
    path.write_bytes(bytes(512))
    with pytest.raises(DiskspecError, match="table_cache"):
        ds.open(path, table_cache=1000)
    with pytest.raises(DiskspecError, match="table_cache"):
        ds.open(path, table_cache="big")  # type: ignore[arg-type]


@pytest.mark.parametrize(("fmt", "options"), [
    ("vpc", {"block_size": 512 << 10, "force_size": True}),
    ("vhdx", {"block_size": MiB}),
], ids=["vhd", "vhdx"])
def test_open_reads_no_table_page_and_walks_stay_bounded(tmp_path: Path, fmt: str,
                                                         options: dict[str, Any]) -> None:
    size = 1 * TiB if fmt == "vhdx" else 512 * GiB  # 1 M table entries
    path = tmp_path / f"big.{fmt}"
    spots = [0, 3 * GiB + 5 * MiB, size // 2, size - MiB]
    with ds.create(path, fmt, size, table_cache=MIN_CACHE, **options) as image:
        for i, at in enumerate(spots):
            image.seek(at)
            image.write(bytes([i + 1]) * 4096)
        assert image.engine.table_cache.peak <= MIN_CACHE
    with ds.open(path, table_cache=MIN_CACHE) as image:
        cache = image.engine.table_cache
        assert cache.loads == 0, "open read table pages"
        runs = list(image.extents())
        data = [e for e in runs if e.state is State.DATA]
        bs = image.engine.block_size  # type: ignore[attr-defined]
        assert [e.offset for e in data] == [at - at % bs for at in spots]
        assert len(runs) <= 2 * len(spots) + 1
        assert sum(e.length for e in runs) == size
        assert cache.peak <= MIN_CACHE
        for i, at in enumerate(spots):
            image.seek(at)
            assert image.read(4096) == bytes([i + 1]) * 4096
        assert cache.peak <= MIN_CACHE


@pytest.mark.parametrize("fmt", ["vpc", "vhdx"])
def test_writes_through_a_tiny_cache_read_back_in_qemu(tmp_path: Path, fmt: str, qemu_img: str,
                                                       qemu_io: str) -> None:
    """Many allocations spread over many table pages with a cache of a few pages: every
    changed entry reaches the file (qemu-io reads every written spot back, qemu-img checks)."""
    size = 40 * GiB  # VHD: 5 BAT pages of 512 KiB blocks; VHDX: 5 of 1 MiB blocks
    path = tmp_path / f"w.{fmt}"
    opts: dict[str, Any] = {"block_size": 512 << 10, "force_size": True} if fmt == "vpc" \
        else {"block_size": MiB}
    rng = random.Random(7)
    last: dict[int, int] = {}  # 4 KiB spot -> the byte last written there
    with ds.create(path, fmt, size, table_cache=MIN_CACHE, cache="unsafe", **opts) as image:
        for n in range(300):
            at = rng.randrange(size // 4096) * 4096
            last[at] = n % 251 + 1
            image.seek(at)
            image.write(bytes([last[at]]) * 4096)
        assert image.engine.table_cache.peak <= MIN_CACHE
        assert len({at >> 33 for at in last}) == 5  # (every page of the table was written)
    if fmt == "vhdx":
        subprocess.run([qemu_img, "check", "-f", fmt, str(path)], check=True, capture_output=True)
    commands = [arg for at, byte in sorted(last.items())
                for arg in ("-c", f"read -P {byte} {at} 4096")]
    done = subprocess.run([qemu_io, "-r", "-f", fmt, *commands, str(path)], capture_output=True,
                          text=True, check=True)
    assert "Pattern verification failed" not in done.stdout, done.stdout[:2000]
    assert done.stdout.count("read 4096/4096 bytes") == len(last)


@pytest.mark.parametrize("fmt", ["vpc", "vhdx"])
def test_fast_paths_read_what_the_general_path_reads(tmp_path: Path, fmt: str) -> None:
    """pread and read_at take one positioned read when the entry's page is in memory, and
    the general path otherwise: the bytes are the same either way, holes included."""
    path = tmp_path / f"f.{fmt}"
    opts: dict[str, Any] = {"block_size": 512 << 10, "force_size": True} if fmt == "vpc" \
        else {"block_size": MiB}
    rng = random.Random(3)
    blob = rng.randbytes(4 * MiB)
    with ds.create(path, fmt, 64 * MiB, **opts) as image:
        image.seek(8 * MiB)
        image.write(blob)
    expect = bytes(8 * MiB) + blob + bytes(52 * MiB)
    with ds.open(path) as image:
        for _ in range(400):
            at, n = rng.randrange(64 * MiB - 8192), rng.choice([512, 4096, 8192])
            assert image.pread(at, n) == expect[at : at + n]
            buf = bytearray(n)
            image.read_at(at, memoryview(buf))
            assert buf == expect[at : at + n]
