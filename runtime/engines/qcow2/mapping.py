"""Guest offsets to host offsets (qcow2.md §4, §6, §7): L2 tables classified in bulk.

An L2 table is decoded once into an array of host-order words; the runs of a walk are found
in C: runs of equal entries (unallocated, zero) by `tables.run_end`, and runs of data
clusters that follow each other in the file by comparing the table with the arithmetic
progression such a run would be, so that a dense image costs one step per run of
contiguous clusters and a sparse one one step per run of holes.
"""

from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Iterator

from ...errors import CorruptError
from ...tables import run_end

# subcluster / cluster kinds (qemu's QCow2SubclusterType)
NORMAL, COMPRESSED, ZERO_PLAIN, ZERO_ALLOC, UNALLOCATED, UNALLOCATED_ALLOC = range(6)
KIND_NAMES = ("normal", "compressed", "zero-plain", "zero-alloc", "unallocated",
              "unallocated-alloc")

L1_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2_OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED_BIT = 1 << 62
ZERO_BIT = 1
HOST_LIMIT = 1 << 56
WORD_LIMIT = 1 << 64
SUBCLUSTERS = 32
ALL_ALLOC = 0xFFFFFFFF
ALL_ZERO = 0xFFFFFFFF << 32

#: a run: (first guest byte, end guest byte, kind, host offset of the first byte for kinds
#: with one, the raw L2 entry for COMPRESSED, else 0)
Run = tuple[int, int, int, int]


class Geometry:
    """The constants of one image that classification needs."""

    def __init__(self, cluster_bits: int, extended: bool, version: int, data_file: bool,
                 where: str):
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.extended = extended
        self.v2 = version < 3
        self.data_file = data_file
        self.sub_size = self.cluster_size // SUBCLUSTERS
        self.where = where

    def corrupt(self, text: str, l2_offset: int, index: int) -> CorruptError:
        return CorruptError(f"{self.where}: {text} (L2 table at {l2_offset:#x}, entry {index})",
                            offset=l2_offset + index * (16 if self.extended else 8), path="l2_entry")


def progression_end(table: array[int], start: int, stop: int, step: int, limit: int) -> int:
    """The first index in [start, stop) at which table[i] != table[start] + (i-start)*step,
    keeping the host offsets below `limit`: one comparison in C when the whole run matches,
    else a binary search of comparisons."""
    first = table[start]
    n = stop - start
    n = min(n, (WORD_LIMIT - 1 - first) // step + 1, max(1, (limit - (first & L2_OFFSET_MASK)) // step))
    if n <= 1:
        return start + 1
    have = table[start : start + n].tobytes()
    want = array(table.typecode, range(first, first + n * step, step)).tobytes()
    if have == want:
        return start + n
    lo, hi = 1, n  # have[:lo] matches, have[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if have[: mid * 8] == want[: mid * 8]:
            lo = mid
        else:
            hi = mid
    return start + lo


def standard_runs(geo: Geometry, l2: array[int], l2_offset: int, lo: int, hi: int, base: int
                  ) -> Iterator[Run]:
    """Runs of standard entries [lo, hi) of one L2 table; `base` = guest offset of entry 0."""
    shift, c = geo.cluster_bits, geo.cluster_size
    i = lo
    while i < hi:
        e = l2[i]
        if e & COMPRESSED_BIT:
            if geo.data_file:
                raise geo.corrupt("compressed cluster in an image with an external data file",
                                  l2_offset, i)
            yield base + (i << shift), base + ((i + 1) << shift), COMPRESSED, e
            i += 1
            continue
        host = e & L2_OFFSET_MASK
        if e & ZERO_BIT:
            if geo.v2:
                raise geo.corrupt("zero flag in a version 2 image", l2_offset, i)
            kind = ZERO_ALLOC if host else ZERO_PLAIN
        elif host or (geo.data_file and e & COPIED):
            kind = NORMAL
        else:
            kind = UNALLOCATED
        if kind in (NORMAL, ZERO_ALLOC):
            if host % c:
                raise geo.corrupt(f"cluster offset {host:#x} is not cluster aligned", l2_offset, i)
            if geo.data_file and host != base + (i << shift):
                raise geo.corrupt(f"data file offset {host:#x} is not the guest offset "
                                  f"{base + (i << shift):#x}", l2_offset, i)
            j = progression_end(l2, i, hi, c, HOST_LIMIT)
        else:
            j = run_end(l2, i, hi)
        yield base + (i << shift), base + (j << shift), kind, host
        i = j


@functools.lru_cache(maxsize=32)
def _pair_runs(pair: bytes) -> re.Pattern[bytes]:
    return re.compile(b"(?:" + re.escape(pair) + b")*")


def _same_pairs(l2: array[int], i: int, hi: int) -> int:
    """The first cluster index in [i, hi) whose (entry, bitmap) pair differs from i's."""
    view = memoryview(l2).cast("B")
    pair = bytes(view[i * 16 : i * 16 + 16])
    m = _pair_runs(pair).match(view, i * 16, hi * 16)
    assert m is not None
    return max(i + 1, m.end() // 16)


def extended_runs(geo: Geometry, l2: array[int], l2_offset: int, lo: int, hi: int, base: int
                  ) -> Iterator[Run]:
    """Runs of extended entries (entry, subcluster bitmap) [lo, hi) of one L2 table."""
    shift, c, sub = geo.cluster_bits, geo.cluster_size, geo.sub_size
    i = lo
    while i < hi:
        e, bm = l2[2 * i], l2[2 * i + 1]
        start = base + (i << shift)
        if e & COMPRESSED_BIT:
            if geo.data_file:
                raise geo.corrupt("compressed cluster in an image with an external data file",
                                  l2_offset, i)
            yield start, start + c, COMPRESSED, e
            i += 1
            continue
        host = e & L2_OFFSET_MASK
        alloc, zero = bm & ALL_ALLOC, bm >> 32
        if alloc & zero:
            raise geo.corrupt("a subcluster is both allocated and zero", l2_offset, i)
        if not (host or (geo.data_file and e & COPIED)):
            if alloc:
                raise geo.corrupt("allocated subclusters in an unallocated cluster", l2_offset, i)
            if zero in (0, ALL_ALLOC):  # whole clusters: runs of equal pairs in bulk
                j = _same_pairs(l2, i, hi)
                yield start, base + (j << shift), ZERO_PLAIN if zero else UNALLOCATED, 0
                i = j
                continue
            yield from _subcluster_runs(start, sub, alloc, zero, 0, ZERO_PLAIN, UNALLOCATED)
            i += 1
            continue
        if host % c:
            raise geo.corrupt(f"cluster offset {host:#x} is not cluster aligned", l2_offset, i)
        if geo.data_file and host != start:
            raise geo.corrupt(f"data file offset {host:#x} is not the guest offset {start:#x}",
                              l2_offset, i)
        if alloc == ALL_ALLOC or zero == ALL_ALLOC:
            yield start, start + c, NORMAL if alloc else ZERO_ALLOC, host
        else:
            yield from _subcluster_runs(start, sub, alloc, zero, host, ZERO_ALLOC, UNALLOCATED_ALLOC)
        i += 1


def _subcluster_runs(start: int, sub: int, alloc: int, zero: int, host: int, zero_kind: int,
                     empty_kind: int) -> Iterator[Run]:
    """The runs of the 32 subclusters of one cluster."""
    x = 0
    while x < SUBCLUSTERS:
        bit = 1 << x
        kind = NORMAL if alloc & bit else zero_kind if zero & bit else empty_kind
        y = x + 1
        while y < SUBCLUSTERS:
            b = 1 << y
            k = NORMAL if alloc & b else zero_kind if zero & b else empty_kind
            if k != kind:
                break
            y += 1
        yield start + x * sub, start + y * sub, kind, host + x * sub
        x = y
