"""Checking (and repairing) VHD images: qemu-img cannot check VHD at all.

Corruptions: bad or mismatched footers, a fixed image whose geometry claims more data than
the file holds, BAT entries past the end of the file, blocks that overlap each other or the
metadata. Leaks: file space no structure references. Repairs are
only the safe ones: rewrite a damaged footer copy from the good one, drop BAT entries that
point past the end of the file (their data cannot be read anyway), and trim leaked space at
the end of the file (footer first, then truncate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diskspec.formats import vhd

from ...engine import CheckResult
from ...util import round_up
from . import locators

if TYPE_CHECKING:
    from .engine import VhdEngine

ALIGN = 4096  # the engine aligns the data of the blocks it allocates (engine.ALIGN)

SECTOR = 512
UNALLOCATED = 0xFFFFFFFF


def check(engine: VhdEngine, repair: bool) -> CheckResult:
    result = CheckResult()
    if repair:
        engine.require_writable(repairing=True)
    _check_footers(engine, result, repair)
    if engine.header is not None:
        _check_blocks(engine, result, repair)
    if repair and result.repaired:
        engine.flush()
    if repair:
        engine.damage.clear()  # found again above, and repaired
    return result


def _check_footers(engine: VhdEngine, result: CheckResult, repair: bool) -> None:
    backend = engine.backend
    size = backend.size()
    good = engine.footer.build()
    tail_at = engine.data_end
    tail = backend.pread(tail_at, 512) if tail_at + 512 <= size else b""
    if tail != good:
        result.corruptions.append(f"footer at offset {tail_at:#x} is missing or damaged")
        if repair:
            backend.pwrite(tail_at, good)
            result.repaired.append(f"rewrote the footer at {tail_at:#x} from the valid copy")
    if engine.disk_type == vhd.DiskType.FIXED:
        if engine.size_overrun:  # not repaired: which size is meant only the user knows
            result.corruptions.append(f"{engine.size_overrun} (the disk reads as "
                                      f"{engine.virtual_size} bytes; the footer is not guest data)")
        return
    head = backend.pread(0, 512)
    if head != good:
        what = "has a bad checksum" if head[:8] == b"conectix" and not vhd.Footer.verify_buffer(head) \
            else "differs from the footer at the end"
        result.corruptions.append(f"footer copy at offset 0 {what}")
        if repair:
            backend.pwrite(0, good)
            result.repaired.append("rewrote the footer copy at offset 0")


def _check_blocks(engine: VhdEngine, result: CheckResult, repair: bool) -> None:
    header = engine.header
    assert header is not None
    span = engine.bitmap_bytes + engine.block_size
    end = engine.data_end
    used: list[tuple[int, int, str]] = [
        (0, 512, "footer copy"), (engine.footer.data_offset, engine.footer.data_offset + 1024,
                                  "dynamic header"),
        (header.table_offset, header.table_offset + round_up(4 * len(engine.bat), SECTOR), "BAT")]
    for i, loc in enumerate(header.parent_locators):
        if loc.platform_code != vhd.PlatformCode.NONE:
            reserved = locators.reserved_bytes(loc)
            if reserved is None:
                result.corruptions.append(f"parent locator {i} has an invalid data space")
                continue
            used.append((loc.platform_data_offset, loc.platform_data_offset + reserved,
                         f"parent locator {i}"))
    dropped = []
    for block, entry in engine.bat.other_positions(UNALLOCATED):  # in bulk, page by page
        start = entry * SECTOR
        if start + span > end:
            result.corruptions.append(f"block {block} at {start:#x} extends past the end of the data "
                                      f"({end:#x})")
            dropped.append(block)
            continue
        used.append((start, start + span, f"block {block}"))
    used.sort()
    covered = 0
    for (_a_start, a_end, a_name), (b_start, _b_end, b_name) in zip(used, used[1:], strict=False):
        if b_start < a_end:
            result.corruptions.append(f"{b_name} at {b_start:#x} overlaps {a_name} (ends {a_end:#x})")
    for start, stop, name in used:
        aligned = name.startswith("block") and (start + engine.bitmap_bytes) % ALIGN == 0 and \
            start - covered < ALIGN  # padding that puts a block's data on a 4 KiB boundary
        if start > covered and not aligned:
            result.leaks.append(f"{start - covered} bytes at {covered:#x} are not referenced")
        covered = max(covered, stop)
    trailing = end - covered
    if trailing > 0 and not any("overlaps" in c for c in result.corruptions):
        result.leaks.append(f"{trailing} bytes at {covered:#x} before the footer are not referenced")
        if repair:
            _trim(engine, covered)
            result.repaired.append(f"trimmed {trailing} leaked bytes at the end of the file")
    if repair and dropped:
        for block in dropped:
            engine.bat[block] = UNALLOCATED
        engine.write_bat(dropped)
        result.repaired.append(f"cleared {len(dropped)} BAT entries that pointed past the end")


def _trim(engine: VhdEngine, new_end: int) -> None:
    """Move the footer back to `new_end` and cut the file after it (footer first: a crash
    in between leaves a valid file with the old footer at its end)."""
    new_end = round_up(new_end, SECTOR)
    engine.backend.pwrite(new_end, engine.footer.build())
    engine.barrier()
    engine.backend.truncate(new_end + 512)
    engine.data_end = new_end
    engine.file_size = new_end + 512
