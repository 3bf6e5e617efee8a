"""Sector bitmaps: VHD numbers bits from the most significant end of each byte, VHDX from
the least significant (vhdx.md 10: "easy to get wrong when sharing code" - hence one place)."""

from __future__ import annotations


def bit(bitmap: bytes | bytearray, i: int, msb_first: bool) -> int:
    return bitmap[i >> 3] >> ((7 - (i & 7)) if msb_first else (i & 7)) & 1


def run_end(bitmap: bytes | bytearray, start: int, value: int, limit: int, msb_first: bool) -> int:
    """First index at or after `start` (below `limit`) whose bit is not `value`."""
    full = 0xFF if value else 0x00
    i = start
    while i < limit:
        if i & 7 == 0 and i + 8 <= limit and bitmap[i >> 3] == full:
            i += 8
            continue
        if bit(bitmap, i, msb_first) != value:
            return i
        i += 1
    return limit


def set_range(bitmap: bytearray, first: int, stop: int, msb_first: bool, granule: int = 1) -> set[int]:
    """Set bits [first, stop); returns the indexes of the `granule`-byte groups that changed."""
    changed: set[int] = set()
    i = first
    while i < stop:
        if i & 7 == 0 and i + 8 <= stop:
            whole = (stop - i) // 8
            lo = i >> 3
            if bitmap[lo : lo + whole] != b"\xff" * whole:
                bitmap[lo : lo + whole] = b"\xff" * whole
                changed.update(range(lo // granule, (lo + whole - 1) // granule + 1))
            i += whole * 8
            continue
        mask = (0x80 >> (i & 7)) if msb_first else (1 << (i & 7))
        if not bitmap[i >> 3] & mask:
            bitmap[i >> 3] |= mask
            changed.add((i >> 3) // granule)
        i += 1
    return changed
