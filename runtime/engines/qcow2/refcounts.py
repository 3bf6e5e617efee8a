"""Reading refcounts (qcow2.md §3): the refcount table in pages, refcount blocks of any width.

Reading needs refcounts only for qemu's "metadata preallocation" test (block status looks
into the file's holes under data clusters when far more clusters are refcounted than the
file system has allocated); check and dissect will use the same reader.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ...errors import CorruptError
from ...pages import PagedTable

if TYPE_CHECKING:
    from .engine import Qcow2Engine

REFTABLE_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
_TYPECODES = {8: "B", 16: "H", 32: "I", 64: "Q"}
#: byte -> how many of its sub-byte refcounts are non-zero, for widths 1, 2 and 4
_NONZERO = {w: bytes(sum(1 for k in range(0, 8, w) if (b >> k) & ((1 << w) - 1)) for b in range(256))
            for w in (1, 2, 4)}


class Refcounts:
    """The refcounts of one image, read on demand."""

    def __init__(self, engine: Qcow2Engine):
        self.engine = engine
        layout = engine.layout
        assert layout is not None
        h = layout.header
        self.cluster_size = layout.cluster_size
        self.bits = 1 << layout.refcount_order
        self.per_block = self.cluster_size * 8 // self.bits
        self.table = PagedTable(engine.backend, h.refcount_table_offset,
                                h.refcount_table_clusters * self.cluster_size // 8, 8, True,
                                engine.table_cache, name="refcount table")

    def block(self, index: int) -> array[int] | bytes | None:
        """Refcount block `index` (None: not allocated), as an array of refcounts for widths
        of 8 bits and more, else the packed bytes."""
        if index >= len(self.table):
            return None
        at = self.table[index] & REFTABLE_OFFSET_MASK
        if not at:
            return None
        backend = self.engine.backend
        if at % self.cluster_size or at + self.cluster_size > backend.size():
            raise CorruptError(f"{backend.path}: refcount block {index} at {at:#x} is outside the "
                               "file or not cluster aligned", offset=self.table.offset + 8 * index,
                               path="refcount_table")
        raw = backend.pread(at, self.cluster_size)
        if self.bits < 8:
            return raw
        block = array(_TYPECODES[self.bits], raw)
        if sys.byteorder == "little" and self.bits > 8:
            block.byteswap()
        return block

    def nonzero_counts(self, clusters: int) -> Iterator[int]:
        """For each refcount block covering the first `clusters` host clusters, how many of
        those clusters have a non-zero refcount (counted in bulk)."""
        for index in range(-(-clusters // self.per_block)):
            block = self.block(index)
            n = min(self.per_block, clusters - index * self.per_block)
            if block is None:
                yield 0
            elif isinstance(block, bytes):
                w = self.bits
                whole = n * w // 8
                count = sum(block[:whole].translate(_NONZERO[w]))
                for k in range(whole * 8 // w, n):  # a last partial byte
                    count += 1 if (block[k * w // 8] >> (k * w % 8)) & ((1 << w) - 1) else 0
                yield count
            else:
                part = block[:n]
                yield n - part.count(0)


def metadata_preallocated(engine: Qcow2Engine) -> bool:
    """qemu's qcow2_detect_metadata_preallocation: at least max(real*10/9, real+2) clusters of
    the file are refcounted, `real` being the clusters the file system has allocated to it."""
    backend = engine.backend
    assert engine.layout is not None
    c = engine.layout.cluster_size
    try:
        real = os.fstat(getattr(backend, "fd", -1)).st_blocks * 512 // c
    except OSError:
        return False
    threshold = max(real * 10 // 9, real + 2)
    clusters = -(-backend.size() // c)
    counted = 0
    try:
        for n in Refcounts(engine).nonzero_counts(clusters):
            counted += n
            if counted >= threshold:
                return True
    except CorruptError:
        return False
    return False
