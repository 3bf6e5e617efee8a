"""Bulk scans of decoded tables (BATs, and the L1/L2 and refcount tables to come): runs of
equal entries are found by the regular-expression engine over the table's packed bytes,
in C, so that a walk over a large sparse disk costs one Python call per run, not per entry."""

from __future__ import annotations

import functools
import re
from array import array


@functools.lru_cache(maxsize=64)
def _repeat(entry: bytes) -> re.Pattern[bytes]:
    return re.compile(b"(?:" + re.escape(entry) + b")*")


def run_end(table: array[int], start: int, stop: int) -> int:
    """The first index in [start, stop) whose entry differs from table[start] (stop if none)."""
    if start >= stop:
        return start
    size = table.itemsize
    view = memoryview(table).cast("B")
    entry = bytes(view[start * size : (start + 1) * size])
    match = _repeat(entry).match(view, start * size, stop * size)
    assert match is not None  # the pattern matches the empty string
    return match.end() // size
