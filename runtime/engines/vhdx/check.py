"""Checking (and repairing) VHDX images.

Corruptions: an invalid header or region table copy, BAT entries past the end of the file
or overlapping each other or the metadata, a log left dirty (replayed at open). Repairs:
rewrite both headers from the current one (which also records a replayed log as clean) and
mark blocks that point past the end as not present (through the log).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from diskspec.formats import vhdx

from ...engine import CheckResult
from ...util import ceil_div
from . import guids
from .engine import REGION_SLOTS, pointing

if TYPE_CHECKING:
    from .engine import VhdxEngine

MIB = 1 << 20
PBS = vhdx.PayloadBlockState
SBS_PRESENT = vhdx.SectorBitmapBlockState.PRESENT
OFFSET_MASK = ~(MIB - 1) & 0xFFFFFFFFFFFFFFFF
ONES = b"\x01" * 256  # a block spans at most 256 MiB units


def present_entries(engine: VhdxEngine) -> Iterator[tuple[int, int, bool]]:
    """(index, file offset, is a sector bitmap) of every BAT entry that points at file space:
    the table is scanned page by page in bulk, entries are looked at only where present."""
    cr = engine.chunk_ratio
    for first, chunk in engine.bat.chunks():
        for pos in pointing(chunk):
            index, entry = first + pos, chunk[pos]
            is_bitmap = index % (cr + 1) == cr
            if not is_bitmap or entry & 7 == SBS_PRESENT:
                yield index, entry & OFFSET_MASK, is_bitmap


def check(engine: VhdxEngine, repair: bool) -> CheckResult:
    result = CheckResult()
    if repair:
        engine.require_writable(repairing=True)
    # as the file holds them now: after a repair the open-time warnings are history
    damaged = engine.copy_damage()
    result.corruptions += damaged
    if engine.replayed and not engine.writable:
        result.warnings.append(f"the log holds {engine.replayed} entries to replay (done in memory)")
    size = engine.file_backend.size()
    metadata: list[tuple[int, int, str]] = [
        (0, MIB, "header section"),
        (engine.header.log_offset, engine.header.log_offset + engine.header.log_length, "log")]
    metadata += [(r.file_offset, r.file_offset + r.length,
                  guids.KNOWN_REGIONS.get(r.guid, guids.text(r.guid))) for r in engine.regions]
    for (_, a_end, a_name), (b_start, _, b_name) in zip(sorted(metadata), sorted(metadata)[1:],
                                                         strict=False):
        if b_start < a_end:
            result.corruptions.append(f"{b_name} at {b_start:#x} overlaps {a_name}")
    # the file's MiB units that blocks use (one byte each: every VHDX structure is MiB-aligned)
    used = bytearray(ceil_div(size, MIB))
    bad: list[int] = []
    for index, at, is_bitmap in present_entries(engine):
        length = MIB if is_bitmap else engine.block_size
        what = f"{'sector bitmap' if is_bitmap else 'block'} entry {index}"
        if at + length > size and not (engine.leave_allocated and at < size):
            result.corruptions.append(f"{what} at {at:#x} extends past the end of the file ({size:#x})")
            bad.append(index)
            continue
        clash = [name for lo, hi, name in metadata if at < hi and lo < at + length]
        first, stop = at // MIB, min(len(used), ceil_div(at + length, MIB))
        if used.find(1, first, stop) >= 0:
            clash.append("another block")
        used[first:stop] = ONES[: stop - first]
        result.corruptions += [f"{what} at {at:#x} overlaps {name}" for name in clash]
    if repair:
        engine.damage.clear()  # found again above, and repaired below
        if any(d.startswith("header") for d in damaged):
            engine.write_header()
            result.repaired += [f"rewrote {d.split(' at ')[0]}" for d in damaged if d.startswith("header")]
        if any(d.startswith("region table") for d in damaged):
            engine.start_session()  # region tables change through the log
            pages = [(at + i, engine.region_raw[i : i + 4096])
                     for at in REGION_SLOTS for i in range(0, len(engine.region_raw), 4096)]
            engine.log_and_apply(pages)
            result.repaired.append("rewrote both region tables from the valid copy")
        if bad:
            engine.start_session()
            for index in bad:
                engine.bat[index] = PBS.NOT_PRESENT
            engine.log_and_apply(engine.bat_pages(bad))
            result.repaired.append(f"marked {len(bad)} blocks that pointed past the end as not present")
        if damaged:
            engine.forget_copy_damage()
    return result
