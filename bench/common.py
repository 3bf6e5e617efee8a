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
