"""Resizing VHD images: grow always; shrink only when the cut part holds no data.

Growing a dynamic image may need room for a longer BAT: blocks and locator areas in the way
are first moved to the end of the file (each move: copy, make durable, then repoint), then
the new BAT entries, the header and last the footers are written; a shrink writes the
footers first and shortens the BAT last. A fixed image keeps its footer at the end of the
file throughout (see _resize_fixed). So a crash leaves either the old size or the new one.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from diskspec.formats import vhd

from ...errors import DiskspecError, UnsupportedFeatureError
from ...util import ceil_div, round_up
from . import geometry, locators

if TYPE_CHECKING:
    from .engine import VhdEngine

SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
CHUNK = 4 << 20


def resize(engine: VhdEngine, new_size: int) -> None:
    engine.require_writable()
    if engine.differencing:
        raise UnsupportedFeatureError("resizing a differencing VHD (it must keep its parent's size)")
    footer = engine.footer
    force = footer.creator_application not in geometry.CHS_CREATORS or \
        geometry.virtual_size(footer, "chs") == footer.current_size
    size, chs = geometry.creation_size(new_size, force)
    if size == engine.virtual_size:
        return
    if size < engine.virtual_size and not engine.range_is_zero(size, engine.virtual_size - size):
        raise DiskspecError(f"shrinking to {size} bytes would lose data beyond that offset")
    if engine.disk_type == vhd.DiskType.FIXED:
        _resize_fixed(engine, size, chs)
    else:
        _resize_dynamic(engine, size, chs)
    engine.virtual_size = geometry.virtual_size(footer, engine.size_rule)
    engine.size_overrun = ""  # the new footer's geometry was made for the new size
    if engine.disk_type == vhd.DiskType.FIXED:
        engine.clamp_to_data(engine.data_end)  # (unless a size rule override says otherwise)


def _new_footer(engine: VhdEngine, size: int, chs: tuple[int, int, int]) -> bytes:
    footer = engine.footer
    footer.current_size = size
    footer.disk_geometry = vhd.DiskGeometry(*chs)
    footer.update_checksum()
    return footer.build()


def _resize_fixed(engine: VhdEngine, size: int, chs: tuple[int, int, int]) -> None:
    """Every step leaves a fixed VHD that opens with the old or the new size, and never shows
    footer bytes as guest data: the footer at the end of the file is the only one read, and
    a file longer than its footer's size has slack that the guest does not see."""
    at = engine.data_end  # where the footer is now
    backend = engine.backend
    if size > at:
        # 1. a copy of the old footer where the file will end: the grown part is slack
        backend.pwrite(size, engine.footer.build())
        engine.barrier()
        stale, at = at, size
        # 2. the old footer's bytes (slack now) become guest zeros
        backend.pwrite(stale, bytes(SECTOR))
        engine.barrier()
    # 3. the footer at the end says the new size (a shrink leaves the cut part as slack)
    raw = _new_footer(engine, size, chs)
    backend.pwrite(at, raw)
    engine.barrier()
    if at > size:
        # 4. the footer where the file will end (in the slack), then the cut
        backend.pwrite(size, raw)
        engine.barrier()
        backend.truncate(size + SECTOR)
        engine.barrier()
    engine.data_end = size
    engine.file_size = size + SECTOR


def _resize_dynamic(engine: VhdEngine, size: int, chs: tuple[int, int, int]) -> None:
    """A longer BAT before a larger size, a smaller size before a shorter BAT: the BAT
    always has entries for the size the footer says."""
    header = engine.header
    assert header is not None
    bs = engine.block_size
    old_entries = len(engine.bat)
    entries = ceil_div(size, bs)
    if entries > old_entries:
        _make_room(engine, header.table_offset + round_up(4 * entries, SECTOR))
        grow = vhd.Bat(num_entries=entries - old_entries,
                       entries=array("I", [UNALLOCATED]) * (entries - old_entries))
        engine.backend.pwrite(header.table_offset + 4 * old_entries, grow.build())
        engine.bat.resize(entries)  # (the new entries are in the file)
        engine.barrier()
        _write_header(engine, entries)
    _new_footer(engine, size, chs)
    engine.write_footer()
    engine.barrier()
    if entries < old_entries:
        # blocks wholly past the smaller end hold only zeros: they drop out of the BAT (their
        # space is a leak that `check -r` trims when it is at the end of the file)
        _write_header(engine, entries)
        engine.bat.resize(entries)


def _write_header(engine: VhdEngine, entries: int) -> None:
    header = engine.header
    assert header is not None
    header.max_table_entries = entries
    header.update_checksum()
    engine.backend.pwrite(engine.footer.data_offset, header.build())
    engine.barrier()


def _make_room(engine: VhdEngine, bat_end: int) -> None:
    """Move every block and locator area that starts before `bat_end` to the end of the file."""
    header = engine.header
    assert header is not None
    table = header.table_offset
    span = engine.bitmap_bytes + engine.block_size
    for block, entry in list(engine.bat.other_positions(UNALLOCATED)):
        start = entry * SECTOR
        if table < start + span and start < bat_end:
            engine.bat[block] = _move(engine, start, span) // SECTOR
            engine.write_bat([block])
            engine.barrier()
    moved = False
    for loc in header.parent_locators:
        at = loc.platform_data_offset
        if loc.platform_code != vhd.PlatformCode.NONE and table < at + SECTOR and at < bat_end:
            space = locators.reserved_bytes(loc) or round_up(loc.platform_data_length, SECTOR)
            loc.platform_data_offset = _move(engine, at, space)
            moved = True
    if moved:
        header.update_checksum()
        engine.backend.pwrite(engine.footer.data_offset, header.build())
        engine.barrier()
    if engine.data_end < bat_end:  # nothing was allocated: the footer itself is in the way
        engine.data_end = round_up(bat_end, SECTOR)
        engine.write_footer()
        engine.barrier()


def _move(engine: VhdEngine, start: int, length: int) -> int:
    """Copy [start, start+length) to the end of the data; returns the new offset. The footer
    goes to the new end first, the copy is made durable before the caller repoints."""
    new = engine.data_end
    engine.backend.pwrite(new + length, engine.footer.build())
    engine.barrier()
    pos = 0
    while pos < length:
        n = min(CHUNK, length - pos)
        engine.backend.pwrite(new + pos, engine.backend.pread(start + pos, n))
        pos += n
    engine.barrier()
    engine.data_end = new + length
    engine.file_size = max(engine.file_size, engine.data_end + SECTOR)
    engine.forget_bitmaps()
    return new
