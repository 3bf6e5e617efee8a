"""convert's data path: the zero scan (runtime/sparse.py) and the pipelined copier
(runtime/ops/copier.py), checked against a per-piece reference and against qemu-img."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diskspec.runtime as ds
from diskspec.runtime.backend import FileBackend
from diskspec.runtime.engines.vhd.engine import VhdEngine
from diskspec.runtime.errors import TruncatedError
from diskspec.runtime.extent import Extent, State
from diskspec.runtime.ops import copier
from diskspec.runtime.ops.convert import convert
from diskspec.runtime.ops.sparse import ZeroScanner, data_runs

from .conftest import run

KiB, MiB = 1 << 10, 1 << 20

#: data in several blocks, written zeros across a block boundary, a partial piece, the end
WRITES = (("0x5a", 0, 4096), ("0x11", 1 * MiB + 512, 70000), ("0x00", 3 * MiB, 2 * MiB),
          ("0x22", 6 * MiB - 4096, 8192), ("0x33", 15 * MiB, 1 * MiB))


def reference_zero_runs(buf: bytes, n: int, first: int, step: int) -> list[tuple[int, int]]:
    """The rule, one piece at a time: [0, first), then `step` bytes each."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j = min(n, i + (first if i == 0 else step))
        if not any(buf[i:j]):
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], j)
            else:
                runs.append((i, j))
        i = j
    return runs


@st.composite
def sparse_buffers(draw: st.DrawFn) -> tuple[bytearray, int, int, int]:
    step = draw(st.sampled_from([1, 2, 8, 16, 64]))
    n = draw(st.integers(0, 600))
    buf = bytearray(n + draw(st.integers(0, 8)))  # bytes past n must not matter
    for _ in range(draw(st.integers(0, 8))):  # runs of data, sparse bytes, zeros
        a = draw(st.integers(0, len(buf)))
        b = min(len(buf), a + draw(st.integers(0, 200)))
        fill = draw(st.sampled_from(["random", "sparse", "zero"]))
        for i in range(a, b):
            buf[i] = (draw(st.integers(1, 255)) if fill == "random"
                      else (draw(st.integers(0, 1)) if fill == "sparse" else 0))
    for i in range(n, len(buf)):
        buf[i] = 0xEE
    return buf, n, draw(st.integers(1, step)), step


@settings(max_examples=400, deadline=None)
@given(sparse_buffers())
def test_zero_runs_follow_the_per_piece_rule(case: tuple[bytearray, int, int, int]) -> None:
    buf, n, first, step = case
    got = ZeroScanner(step, len(buf)).zero_runs(buf, n, first)
    assert got == reference_zero_runs(bytes(buf), n, first, step)
    data = data_runs(got, n)
    covered = sorted(got + data)
    assert sum(b - a for a, b in covered) == n  # zero and data runs tile [0, n)
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))


@given(sparse_buffers(), st.integers(0, 3000), st.integers(0, 3000))
def test_zero_runs_at_an_offset_in_the_buffer(case: tuple[bytearray, int, int, int], before: int,
                                              after: int) -> None:
    """A span in the middle of a bigger buffer scans as the same bytes on their own; the
    bytes around it (non-zero here) change nothing."""
    buf, n, first, step = case
    big = bytearray(b"\xff" * before) + buf[:n] + bytearray(b"\xee" * after)
    got = ZeroScanner(step, len(big)).zero_runs(big, n, first, before)
    assert got == reference_zero_runs(bytes(buf), n, first, step)


def test_zero_runs_of_large_buffers() -> None:
    step, n = 4096, 8 * MiB
    scanner = ZeroScanner(step, n)
    zeros = bytearray(n)
    assert scanner.zero_runs(zeros, n, step) == [(0, n)]
    noise = bytearray(os.urandom(n))
    assert scanner.zero_runs(noise, n, step) == reference_zero_runs(bytes(noise), n, step, step)
    # every piece starts with a zero byte but holds data: each is a candidate, none is zero
    led = bytearray((b"\0" + b"\x01" * 511) * (n // 512))
    assert scanner.zero_runs(led, n, step) == []
    # zero pieces separated by single data bytes, at an unaligned start
    mixed = bytearray(n)
    for at in range(10_000, n, 3 * step + 7):
        mixed[at] = 1
    first = 1000
    assert scanner.zero_runs(mixed, n, first) == reference_zero_runs(bytes(mixed), n, first, step)


# -- the copier, end to end ----------------------------------------------------------------------

def guest_sha(qemu_img: str, path: Path, fmt: str, tmp: Path) -> str:
    out = tmp / f"{path.name}.check.raw"
    run(qemu_img, "convert", "-f", fmt, "-O", "raw", str(path), str(out))
    try:
        return hashlib.sha256(out.read_bytes()).hexdigest()
    finally:
        out.unlink()


@pytest.fixture
def vhd_source(make_image: Callable[..., Path]) -> Path:
    return make_image("vpc", "16M", "subformat=dynamic", writes=WRITES)


@pytest.mark.parametrize("chunk", [64 * KiB, 1 * MiB + 4096])
@pytest.mark.parametrize("sparse", [0, 4096, 64 * KiB])
@pytest.mark.parametrize("target", ["raw", "vpc", "vhdx"])
def test_small_chunks_many_prefetches(vhd_source: Path, tmp_path: Path, qemu_img: str,
                                      chunk: int, sparse: int, target: str) -> None:
    """Chunks that do not divide the blocks: every job boundary, prefetch and piece edge."""
    truth = guest_sha(qemu_img, vhd_source, "vpc", tmp_path)
    dst = tmp_path / f"out.{target}"
    with ds.open(vhd_source) as src:
        stats = convert([src], dst, target, sparse_size=sparse, chunk=chunk)
    assert guest_sha(qemu_img, dst, target, tmp_path) == truth
    if target == "vhdx":  # qemu-img checks no other of these formats
        run(qemu_img, "check", "-f", target, str(dst))
    # the written zeros at 3 MiB (2 MiB) are skipped unless -S 0
    assert stats.skipped_zero >= (2 * MiB if sparse else 0)
    assert stats.written + stats.skipped_zero == stats.size == src.size


def test_reads_without_file_offsets_go_through_the_engine(vhd_source: Path, tmp_path: Path,
                                                          qemu_img: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that cannot say where its data lies (compressed, encrypted...) is read with
    read_at on the main thread, interleaved with prefetched jobs."""
    real = VhdEngine.extents
    calls = 0

    def half_hidden(self: VhdEngine, offset: int, length: int) -> Iterator[Extent]:
        nonlocal calls
        for e in real(self, offset, length):
            calls += 1
            hide = e.state is State.DATA and calls % 2 == 0
            yield Extent(e.offset, e.length, e.state, None) if hide else e

    monkeypatch.setattr(VhdEngine, "extents", half_hidden)
    dst = tmp_path / "out.raw"
    with ds.open(vhd_source) as src:
        convert([src], dst, "raw", chunk=256 * KiB)
    monkeypatch.undo()
    assert guest_sha(qemu_img, dst, "raw", tmp_path) == guest_sha(qemu_img, vhd_source, "vpc", tmp_path)


def test_a_failed_prefetch_fails_the_convert(vhd_source: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error in the reader thread reaches the caller; the temporary target goes."""
    real = FileBackend.readinto
    reads = 0
    threads: set[str] = set()

    def failing(self: FileBackend, offset: int, buf: memoryview) -> None:
        nonlocal reads
        if len(buf) >= 64 * KiB:  # data reads, not metadata
            reads += 1
            threads.add(threading.current_thread().name)
            if reads == 5:
                raise TruncatedError(f"{self.path}: file ends early", offset=offset)
        real(self, offset, buf)

    monkeypatch.setattr(FileBackend, "readinto", failing)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with ds.open(vhd_source) as src, pytest.raises(TruncatedError, match="file ends early"):
        convert([src], out_dir / "out.vhdx", "vhdx", chunk=64 * KiB)
    assert 5 <= reads < 5 + copier.DEPTH  # reads are at most DEPTH batches ahead
    assert {name.split("_")[0] for name in threads} == {"diskspec-read"}
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("source", ["vpc", "vhdx"])
def test_batches_read_and_write_in_few_calls(tmp_path: Path, source: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks are read in batches of up to one chunk: blocks that follow each other in
    the source file are one read, and data that follows in the guest is one write."""
    size, chunk = 16 * MiB, 4 * MiB
    block = 512 * KiB if source == "vpc" else 1 * MiB  # the smallest each format allows
    data = os.urandom(size)
    src_path = tmp_path / f"small-blocks.{source}"
    extra: dict[str, Any] = {"force_size": True} if source == "vpc" else {}
    with ds.create(src_path, source, size, block_size=block, **extra) as img:
        img.write(data)  # blocks allocated in guest order
    reads: list[int] = []
    writes: list[int] = []
    real_read, real_write = FileBackend.readinto, FileBackend.pwrite

    def reading(self: FileBackend, offset: int, buf: memoryview) -> None:
        if threading.current_thread().name.startswith("diskspec-read"):
            reads.append(len(buf))
        real_read(self, offset, buf)

    def writing(self: FileBackend, offset: int, data: bytes | memoryview) -> None:
        if self.path.name.endswith(".diskspec-part"):
            writes.append(len(data))
        real_write(self, offset, data)

    monkeypatch.setattr(FileBackend, "readinto", reading)
    monkeypatch.setattr(FileBackend, "pwrite", writing)
    dst = tmp_path / "out.raw"
    with ds.open(src_path) as src:
        convert([src], dst, "raw", chunk=chunk)
    monkeypatch.undo()
    assert dst.read_bytes() == data
    assert sum(reads) == size
    # a VHD keeps a sector bitmap before each block's data: one read per block; VHDX blocks
    # lie back to back: one read per batch
    assert len(reads) == (size // block if source == "vpc" else size // chunk)
    assert writes == [chunk] * (size // chunk)


def test_host_holes_are_probed_only_in_files_that_have_them(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Holes of the source file under data extents read as zeros without a read; a file
    with no hole costs one probe in all, not a pair of lseeks per extent."""
    from diskspec.runtime.ops.mapping import block_status

    size, block = 8 * MiB, 512 * KiB
    path = tmp_path / "src.vhd"
    with ds.create(path, "vpc", size, subformat="dynamic", block_size=block, force_size=True) as img:
        for k in range(0, size // block, 2):
            img.seek(k * block)
            img.write(os.urandom(block))
    probes: list[int] = []
    real = os.lseek

    def counting(fd: int, pos: int, how: int) -> int:
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            probes.append(how)
        return real(fd, pos, how)

    monkeypatch.setattr(os, "lseek", counting)
    with ds.open(path) as src:
        entries = list(block_status(src, host_holes="all"))
    assert len(probes) == 1 and sum(not e.zero for e in entries) == size // block // 2

    sparse = tmp_path / "holes.raw"
    with open(sparse, "wb") as f:  # data, a 1 MiB hole, data
        f.write(os.urandom(MiB))
        f.seek(2 * MiB)
        f.write(os.urandom(MiB))
    probes.clear()
    with ds.open(sparse, format="raw") as src:
        runs = [(e.start, e.length, e.zero) for e in block_status(src, host_holes="all")]
    assert runs == [(0, MiB, False), (MiB, MiB, True), (2 * MiB, MiB, False)]
    assert len(probes) > 1


@pytest.mark.parametrize("target", ["raw", "vpc", "vhdx"])
def test_a_new_target_is_synced_once(vhd_source: Path, tmp_path: Path, target: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """After the data: one fdatasync of the whole target, then the directory's fsync (the rename);
    none with flush=False (qemu-img's -t unsafe). A VHDX's closing header is written before
    that one fsync, so the image is clean on disk."""
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    written: list[int] = []
    real_write = os.pwrite

    def counting_writes(fd: int, data: bytes | memoryview, offset: int) -> int:
        written.append(len(synced))  # how many fsyncs came before this write
        return real_write(fd, data, offset)

    for flush in (True, False):
        dst = tmp_path / f"out-{flush}.{target}"
        synced.clear()
        written.clear()
        with ds.open(vhd_source) as src:
            monkeypatch.setattr(os, "fsync", recording)
            monkeypatch.setattr(os, "fdatasync", recording)
            monkeypatch.setattr(os, "pwrite", counting_writes)
            convert([src], dst, target, chunk=256 * KiB, flush=flush)
            monkeypatch.undo()
        temp = [p for p in synced if p.endswith(".diskspec-part")]
        # the creator may sync the new, still empty image once; after the data, one sync
        after_data = synced[written[-1]:]
        if flush:
            assert after_data == [temp[-1], str(tmp_path)], synced
        else:
            assert after_data == [], synced
        assert len(temp) <= 2
        with ds.open(dst) as out:  # closed clean: a VHDX needs no replay
            assert not out.engine.warnings


def test_disk_writes_start_during_a_durable_copy(vhd_source: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import diskspec.runtime.backend as backend

    assert backend._sync_file_range() is not None  # Linux: libc's sync_file_range is found
    started: list[Path] = []
    real = FileBackend.start_writeback

    def recording(self: FileBackend) -> None:
        started.append(self.path)
        real(self)  # the real call, on the real descriptor

    monkeypatch.setattr(FileBackend, "start_writeback", recording)
    monkeypatch.setattr(copier, "WRITEBACK_STEP", 64 * KiB)
    for target in ("raw", "vpc", "vhdx"):
        for flush in (True, False):
            started.clear()
            dst = tmp_path / f"wb-{flush}.{target}"
            with ds.open(vhd_source) as src:
                stats = convert([src], dst, target, chunk=256 * KiB, flush=flush)
            if flush:  # about one start per 64 KiB written, on the temporary target
                assert 3 <= len(started) <= stats.written // (64 * KiB)
                assert all(p.name.endswith(".diskspec-part") for p in started)
            else:
                assert started == []


@pytest.mark.parametrize(("target", "sparse"), [("raw", 4096), ("raw", 0), ("vpc", 4096), ("vhdx", 4096)])
def test_huge_holes_and_file_copies_need_no_big_buffers(tmp_path: Path, target: str, sparse: int,
                                                        qemu_img: str) -> None:
    """A 1 TiB hole is one job that is never read, and a file-to-file copy (-S 0, raw to raw)
    never passes through memory: neither may size a buffer after itself."""
    import tracemalloc

    src_path = tmp_path / "sparse.raw"
    size = 1 << 40
    tail = os.urandom(12 * MiB)  # -S 0 raw->raw: one 12 MiB kernel copy, no buffer at all
    with open(src_path, "wb") as f:
        f.truncate(size)
        f.seek(size - len(tail))
        f.write(tail)
    dst = tmp_path / f"out.{target}"
    with ds.open(src_path, format="raw") as src:
        tracemalloc.start()
        try:
            stats = convert([src], dst, target, sparse_size=sparse, chunk=1 * MiB)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert stats.written == len(tail) and stats.skipped_zero == size - len(tail)
    assert peak < 8 * MiB, peak  # two 1 MiB buffers and a 1 MiB zero pattern at most
    with ds.open(dst) as out:
        assert out.size == size and out.pread(size - len(tail), len(tail)) == tail
    if target == "vhdx":
        run(qemu_img, "check", "-f", target, str(dst))
