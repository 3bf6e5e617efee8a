"""Resizing VHDX images: grow; shrink only when the cut part holds no data.

The new size and the BAT entries it adds or drops are one log transaction, so a crash leaves
either size. The BAT region must already have room for the new entries (QEMU and diskspec
round it up to 1 MiB, which holds 131072 entries); moving the region is not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diskspec.formats import vhdx

from ...errors import DiskspecError, UnsupportedFeatureError
from ...util import ceil_div
from . import guids

if TYPE_CHECKING:
    from .engine import VhdxEngine

MIB = 1 << 20
PAGE = 4096


def resize(engine: VhdxEngine, new_size: int) -> None:
    engine.require_writable()
    if engine.has_parent:
        raise UnsupportedFeatureError("resizing a differencing VHDX (it must keep its parent's size)")
    lss = engine.logical_sector
    if new_size <= 0 or new_size % lss or new_size > 64 << 40:
        raise DiskspecError(f"the size must be a positive multiple of {lss} up to 64 TiB")
    old_size = engine.virtual_size
    if new_size == old_size:
        return
    if new_size < old_size and not engine.range_is_zero(new_size, old_size - new_size):
        raise DiskspecError(f"shrinking to {new_size} bytes would lose data beyond that offset")
    blocks = ceil_div(new_size, engine.block_size)
    cr = engine.chunk_ratio
    entries = blocks + (blocks - 1) // cr
    if entries * 8 > engine.bat_region.length:
        raise UnsupportedFeatureError(f"growing to {new_size} bytes needs a BAT region larger than "
                                      f"{engine.bat_region.length} bytes (moving it)")
    engine.start_session()
    old_entries = len(engine.bat)
    if entries > old_entries:
        engine.bat.resize(entries)
        engine.bat.fill(old_entries, entries, 0)  # whatever the region held there
        if engine.leave_allocated:  # a fixed image stays fully allocated
            for b in range(ceil_div(old_size, engine.block_size), blocks):
                at = engine.allocate_space(engine.block_size)
                engine.bat[b + b // cr] = at | vhdx.PayloadBlockState.FULLY_PRESENT
    changed = list(range(min(entries, old_entries), max(entries, old_entries)))
    pages = engine.bat_pages(changed) if changed else []
    if entries < old_entries:
        engine.bat.resize(entries)
        # dropped entries read back as not present: zero them in their pages
        pages = [(at, _clear_tail(engine, at, page, entries)) for at, page in pages]
    pages.append(_size_page(engine, new_size))
    engine.barrier()
    engine.log_and_apply(sorted(dict(pages).items()))
    engine.virtual_size = new_size


def _clear_tail(engine: VhdxEngine, page_at: int, page: bytes, keep: int) -> bytes:
    first = (page_at - engine.bat_region.file_offset) // 8
    cut = max(0, keep - first) * 8
    return page[:cut] + bytes(len(page) - cut)


def _size_page(engine: VhdxEngine, size: int) -> tuple[int, bytes]:
    """The 4 KiB metadata page holding the virtual disk size item, with the new size."""
    entry = next(e for e in engine.metadata_entries if e.item_id == guids.VIRTUAL_DISK_SIZE)
    at = engine.metadata_offset + entry.offset
    page_at = at - at % PAGE
    if at + 8 > page_at + PAGE:
        raise UnsupportedFeatureError("a virtual disk size item that spans two pages")
    page = bytearray(engine.file_backend.pread(page_at, PAGE))
    page[at - page_at : at - page_at + 8] = vhdx.VirtualDiskSize(size).build()
    return page_at, bytes(page)
