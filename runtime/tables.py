"""Bulk scans of decoded tables (BATs, and the L1/L2 and refcount tables to come): runs of
equal entries are found by the regular-expression engine over the table's packed bytes,
in C, so that a walk over a large sparse disk costs one Python call per run, not per entry."""

from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Iterator


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


def other_positions(table: array[int], value: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[int]:
    """The indexes in [start, stop) whose entry is not `value`: runs of `value` are skipped in
    bulk, so the cost is one Python step per other entry (the allocated ones, say)."""
    stop = len(table) if stop is None else stop
    pos = start
    while pos < stop:
        if table[pos] == value:
            pos = run_end(table, pos, stop)
            continue
        yield pos
        pos += 1
