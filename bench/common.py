"""What the benchmarks share: block runs for building test images, and page-cache warming."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MAX_RUN = 32  # blocks per write call when creating images (64 MiB of 2 MiB blocks)


def runs(blocks: list[int], longest: int = MAX_RUN) -> Iterator[tuple[int, int]]:
    """(first block, count) of each run of consecutive blocks, at most `longest` long."""
    i = 0
    while i < len(blocks):
        j = i + 1
        while j < len(blocks) and blocks[j] == blocks[j - 1] + 1 and j - i < longest:
            j += 1
        yield blocks[i], j - i
        i = j


def warm(path: Path) -> None:
    """Read the whole file once (this machine pages out page cache left idle for ~30 s)."""
    buf = bytearray(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.readv(fd, [buf]):
            pass
    finally:
        os.close(fd)


def warm_data(path: Path) -> None:
    """Read only the file's data segments (SEEK_DATA/SEEK_HOLE): a sparse image's holes can be
    gigabytes that cost time to read and are never cached anyway."""
    buf = bytearray(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        end, pos = os.fstat(fd).st_size, 0
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            while pos < hole:
                n = os.preadv(fd, [memoryview(buf)[: min(len(buf), hole - pos)]], pos)
                if n <= 0:
                    break
                pos += n
    finally:
        os.close(fd)
