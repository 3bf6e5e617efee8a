"""Compare: are two images' guest contents equal (across formats), and where do they differ.

Like qemu-img compare: runs that both images report as zeros are not read; a run one image
reports as zeros is checked for zeros in the other; the rest is read from both in large
chunks. A difference is reported at the start of its 512-byte sector ("Content mismatch at
offset N!"). Different sizes are equal when the larger image's excess reads as zeros
(strict mode: a size difference is a mismatch, and so is any difference in block status).

Strict block status is qemu-img's rule: the status words of the two images at each offset
must be equal, which is every member of a map entry (present, zero, data, whether an offset
is known) and whether the run reaches the image's end (qemu's EOF flag: two runs of equal
data whose extents end at different places differ). The entries are map's (host holes only
under data that maps 1:1 onto its file), as qemu-img's block status reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..image import Image
from .mapping import HostHoles, MapEntry, block_status, merged

CHUNK = 8 << 20
SECTOR = 512


@dataclass
class CompareResult:
    """What compare found: identical or not, the first differing offset, messages."""

    identical: bool
    messages: list[str] = field(default_factory=list)
    offset: int | None = None  # first differing offset (sector start), when content differs

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1


class _Reader:
    def __init__(self, chunk: int):
        self.a = bytearray(chunk)
        self.b = bytearray(chunk)
        self.zeros = memoryview(bytes(chunk))
        self.chunk = chunk


def compare(a: Image, b: Image, strict: bool = False,
            progress: Callable[[int, int], None] | None = None, chunk: int = CHUNK) -> CompareResult:
    result = CompareResult(True)
    if a.size != b.size and strict:
        return CompareResult(False, ["Strict mode: Image size mismatch!"])
    common = min(a.size, b.size)
    total = max(a.size, b.size)
    r = _Reader(chunk)
    holes: HostHoles = "identity" if strict else "all"
    pairs = _lockstep(merged(block_status(a, 0, common, host_holes=holes)),
                      merged(block_status(b, 0, common, host_holes=holes)))
    for start, end, ea, eb in pairs:
        if strict and _status(ea, a.size) != _status(eb, b.size):
            return _differ(result, f"Strict mode: Offset {start} block status mismatch!", start)
        if ea.zero and eb.zero:
            pass
        elif ea.zero or eb.zero:
            at = _first_nonzero(b if ea.zero else a, start, end, r)
            if at is not None:
                return _mismatch(result, at)
        else:
            at = _first_difference(a, b, start, end, r)
            if at is not None:
                return _mismatch(result, at)
        if progress is not None:
            progress(end, total)
    if a.size != b.size:
        result.messages.append("Warning: Image size mismatch!")
    larger = a if a.size > b.size else b
    for e in merged(block_status(larger, common, total - common, host_holes="all")):
        if not e.zero:
            at = _first_nonzero(larger, e.start, e.end, r)
            if at is not None:
                return _mismatch(result, at)
        if progress is not None:
            progress(e.end, total)
    result.messages.append("Images are identical.")
    return result


def _status(entry: MapEntry, size: int) -> tuple[bool, bool, bool, bool, bool]:
    """qemu's block status word: ALLOCATED, ZERO, DATA, OFFSET_VALID, EOF."""
    return entry.present, entry.zero, entry.data, entry.offset is not None, entry.end == size


def _differ(result: CompareResult, message: str, offset: int) -> CompareResult:
    result.identical = False
    result.messages.append(message)
    result.offset = offset
    return result


def _mismatch(result: CompareResult, offset: int) -> CompareResult:
    return _differ(result, f"Content mismatch at offset {offset}!", offset)


def _lockstep(xs: Iterator[MapEntry], ys: Iterator[MapEntry]
              ) -> Iterator[tuple[int, int, MapEntry, MapEntry]]:
    """(start, end, entry of a, entry of b) over the ranges where both entries hold."""
    x = next(xs, None)
    y = next(ys, None)
    while x is not None and y is not None:
        start = max(x.start, y.start)
        end = min(x.end, y.end)
        if start < end:
            yield start, end, x, y
        if x.end <= y.end:
            x = next(xs, None)
        else:
            y = next(ys, None)


def _sector_of(start: int, at: int) -> int:
    """The start of the sector holding `at`, not before the run's start."""
    return max(start, at - at % SECTOR)


def _first_nonzero(image: Image, start: int, end: int, r: _Reader) -> int | None:
    pos = start
    while pos < end:
        n = min(r.chunk, end - pos)
        view = memoryview(r.a)[:n]
        image.read_at(pos, view)
        if not r.a.startswith(r.zeros[:n]):
            return _sector_of(start, pos + _first_mismatch(r.a, r.zeros, n))
        pos += n
    return None


def _first_difference(a: Image, b: Image, start: int, end: int, r: _Reader) -> int | None:
    pos = start
    va, vb = memoryview(r.a), memoryview(r.b)
    while pos < end:
        n = min(r.chunk, end - pos)
        a.read_at(pos, va[:n])
        b.read_at(pos, vb[:n])
        if not r.a.startswith(vb[:n]):
            return _sector_of(start, pos + _first_mismatch(r.a, vb, n))
        pos += n
    return None


def _first_mismatch(buf: bytearray, other: memoryview, n: int) -> int:
    """Index of the first byte where buf[:n] and other[:n] differ (they do differ)."""
    lo, hi = 0, n  # the difference lies in [lo, hi)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if buf.startswith(other[lo:mid], lo):
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if buf[i] != other[i]:
            return i
    return hi
