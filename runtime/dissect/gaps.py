"""What no structure references: overlaps between structures, and the gaps between them,
scanned for non-zero bytes (possible remnants) in bounded chunks within a byte budget."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..foreign import spec_magics
from .common import MiB, Reader, human_size, printable
from .model import Field, Node

#: granularity of the non-zero ranges reported (exact at their ends)
PIECE = 4096
#: one read while scanning
CHUNK = 1 * MiB
#: window read at each sample point when the gaps hold more data than the budget
WINDOW = 64 * 1024
#: remnant nodes listed per gap (the rest are counted)
MAX_RANGES = 64
#: overlaps listed (the rest are counted)
MAX_OVERLAPS = 20

#: the specs whose magics (`contents` at offset 0 of a type) name what a remnant looks like
SPECS = ("vhd", "vhdx", "qcow2", "qed", "fvd", "add_cow")


@functools.cache
def magics() -> tuple[tuple[bytes, str], ...]:
    """(magic, "a <spec> <type>") for every type that starts with a magic of 4+ bytes, the
    longest first."""
    out = [(magic, f"a {spec} {name}") for spec in SPECS for name, magic in spec_magics(spec)
           if len(magic) >= 4]
    return tuple(sorted(set(out), key=lambda m: -len(m[0])))


MAX_HINTS = 8


@dataclass
class ScanOptions:
    """Whether and how much of the unreferenced bytes to read."""

    scan: bool = True
    #: bytes of gap data read at most; beyond it the gaps are sampled
    budget: int = 256 * MiB


def overlaps(root: Node) -> None:
    """Damage for top-level structures that overlap each other."""
    spans = sorted((n for n in root.children if n.kind != "gap" and n.size > 0),
                   key=lambda n: (n.offset, n.end))
    found: list[str] = []
    count = 0
    widest: Node | None = None
    for node in spans:
        if widest is not None and node.offset < widest.end:
            count += 1
            if len(found) < MAX_OVERLAPS:
                found.append(f"{node.name} [{node.offset:#x}, {node.end:#x}) overlaps "
                             f"{widest.name} [{widest.offset:#x}, {widest.end:#x})")
        if widest is None or node.end > widest.end:
            widest = node
    root.damage += found
    if count > len(found):
        root.damage.append(f"... and {count - len(found)} more overlapping structures")


def add_gaps(root: Node, reader: Reader, options: ScanOptions) -> None:
    """A "gap" node for every byte range of the file no top-level node covers."""
    spans = sorted((n.offset, n.end) for n in root.children if n.kind != "gap" and n.size > 0)
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            gaps.append((pos, min(start, reader.size)))
        pos = max(pos, end)
    if pos < reader.size:
        gaps.append((pos, reader.size))
    gaps = [(s, e) for s, e in gaps if e > s]
    if not gaps:
        return
    data = [(s, e, list(reader.data_ranges(s, e))) for s, e in gaps]
    total = sum(de - ds for _, _, ranges in data for ds, de in ranges)
    stride = 0  # 0: read everything
    if options.scan and total > options.budget:
        stride = max(WINDOW, -(-total * WINDOW // max(options.budget, WINDOW)) // WINDOW * WINDOW)
    for start, end, ranges in data:
        node = Node(f"gap@{start:#x}", start, end - start, "gap")
        root.add(node)
        on_disk = sum(de - ds for ds, de in ranges)
        node.fields.append(Field("allocated_bytes", start, 0, on_disk,
                                 "bytes not in a hole of the sparse file", ""))
        if not options.scan:
            node.summary = f"unreferenced {human_size(end - start)} (not scanned)"
            continue
        _scan(node, reader, ranges, stride)


@dataclass
class _Range:
    """Non-zero bytes found in a gap: where, their first bytes, what they look like."""

    start: int
    end: int
    head: bytes
    hints: list[str]


def _scan(node: Node, reader: Reader, ranges: list[tuple[int, int]], stride: int) -> None:
    found: list[_Range] = []
    scanned = 0
    for ds, de in ranges:
        windows = [(ds, de)] if not stride else \
            [(p, min(p + WINDOW, de)) for p in range(ds, de, stride)]
        for ws, we in windows:
            pos = ws
            while pos < we:
                chunk = reader.read(pos, min(CHUNK, we - pos))
                if not chunk:
                    break
                scanned += len(chunk)
                _pieces(chunk, pos, found)
                pos += len(chunk)
    n = len(found)
    nonzero = sum(r.end - r.start for r in found)
    node.fields += [
        Field("scanned_bytes", node.offset, 0, scanned, None, ""),
        Field("sampled", node.offset, 0, bool(stride),
              f"one {human_size(WINDOW)} window every {human_size(stride)}" if stride else None, ""),
        Field("nonzero_ranges", node.offset, 0, n, None, ""),
        Field("nonzero_bytes", node.offset, 0, nonzero,
              "bytes in the ranges below (zero runs under 4 KiB inside a range included)", ""),
    ]
    sampled = " (sampled)" if stride else ""
    if not found:
        node.summary = f"unreferenced {human_size(node.size)}, all zero{sampled}"
        return
    node.summary = (f"unreferenced {human_size(node.size)}, {n} range(s) with data "
                    f"({human_size(nonzero)}){sampled}")
    node.notes.append("non-zero bytes that no structure references: possible remnants")
    for r in found[:MAX_RANGES]:
        rem = Node(f"data@{r.start:#x}", r.start, r.end - r.start, "remnant")
        rem.fields.append(Field("first_bytes", r.start, len(r.head), r.head.hex(),
                                printable(r.head), ""))
        if r.hints:
            rem.fields.append(Field("looks_like", r.start, 0, "; ".join(r.hints),
                                    None, "known signatures at 4 KiB steps inside the range"))
        rem.summary = f"{human_size(r.end - r.start)} of data" + \
            (f": {r.hints[0]}" if r.hints else "")
        node.add(rem)
    if n > MAX_RANGES:
        node.notes.append(f"{n - MAX_RANGES} more range(s) with data not listed")


def _pieces(chunk: bytes, base: int, found: list[_Range]) -> None:
    """Extend `found` with the non-zero ranges of `chunk` (at file offset `base`), looked
    at in pieces aligned to absolute 4 KiB boundaries."""
    if chunk.count(0) == len(chunk):
        return
    lo = 0
    while lo < len(chunk):
        hi = min(len(chunk), (base + lo) // PIECE * PIECE + PIECE - base)
        piece = chunk[lo:hi]
        at = base + lo
        lo = hi
        if piece.count(0) == len(piece):
            continue
        start = at + len(piece) - len(piece.lstrip(b"\0"))
        end = at + len(piece.rstrip(b"\0"))
        hint = next((f"{what} at {at:#x}" for magic, what in magics() if piece.startswith(magic)),
                    None)
        last = found[-1] if found else None
        if last is not None and start - last.end < PIECE:
            last.end = end
        else:
            last = _Range(start, end, piece[start - at : start - at + 16], [])
            found.append(last)
        if hint is not None and len(last.hints) < MAX_HINTS:
            last.hints.append(hint)
