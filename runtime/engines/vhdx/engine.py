"""The VHDX engine: open (headers, region tables, metadata, BAT, log replay), map, read,
write (payload in place, every metadata change through the log), differencing.

Layouts are the generated codecs' (`diskspec.formats.vhdx`); this module holds the rules of
[MS-VHDX] as vhdx.md restates them.
"""

from __future__ import annotations

import os
import sys
import uuid
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path, PureWindowsPath
from typing import Any

from diskspec.formats import vhdx

from ... import bitmap as bitmaps
from ...backend import Backend, FileBackend
from ...engine import Capabilities, CheckResult, Engine
from ...errors import (
    CorruptError,
    DiskspecError,
    NotThisFormatError,
    ParentMissingError,
    TruncatedError,
    UnsupportedFeatureError,
)
from ...extent import Extent, State
from ...overlay import OverlayBackend
from ...pages import PagedTable
from ...util import ZEROS, ceil_div, fill_zero, round_up
from . import guids, log

KIB, MIB = 1 << 10, 1 << 20
HEADER_SLOTS = (64 * KIB, 128 * KIB)
REGION_SLOTS = (192 * KIB, 256 * KIB)
MAX_SIZE = 64 << 40
PBS = vhdx.PayloadBlockState
SBS = vhdx.SectorBitmapBlockState
OFFSET_MASK = ~(MIB - 1) & 0xFFFFFFFFFFFFFFFF
ZERO_STATES = {PBS.UNDEFINED, PBS.ZERO, PBS.UNMAPPED, PBS.UNMAPPED_V095}
MSB_FIRST = False  # VHDX sector bitmaps: sector 0 is the least significant bit of byte 0
#: nothing in a VHDX lies past this (64 TiB of data plus metadata): log writes beyond are corrupt
MAX_FILE = 1 << 48
#: the most a read-only replay keeps in memory
MAX_OVERLAY = 256 * MIB
#: sector bitmap blocks kept in memory (each 1 MiB)
BITMAP_CACHE = 8


class VhdxEngine(Engine):
    format_name = "vhdx"
    capabilities = Capabilities(
        create=True, write=True, backing=True, resize=True, check=True, repair=True,
        commit_target=True,
        create_options={
            "size": "Virtual disk size (at most 64 TiB)",
            "subformat": "Type of virtual hard disk file: dynamic (default), fixed or differencing",
            "block_size": "Block size (0 = auto: 8M up to 1G, 16M up to 100G, 32M up to 32T, 64M above;"
                          " else a power of two from 1M to 256M)",
            "log_size": "Log size (a multiple of 1M, default 1M)",
            "block_state_zero": "Mark the blocks of a new image ZERO rather than NOT_PRESENT [on/off]",
            "logical_sector_size": "Logical sector size (512 or 4096)",
            "physical_sector_size": "Physical sector size (512 or 4096)",
            "backing_file": "Parent image of a differencing image (same as -b)",
            "backing_fmt": "Format of the parent image (same as -F)",
        },
        backing_create={"subformat": "differencing"},
        variants={"dynamic": {"subformat": "dynamic", "block_size": 1 << 20},
                  "fixed": {"subformat": "fixed", "block_size": 1 << 20},
                  "dynamic-4k": {"subformat": "dynamic", "block_size": 1 << 20,
                                 "logical_sector_size": 4096}})

    def __init__(self, backend: Backend):
        super().__init__(backend)
        self.file_backend = backend  # the real file (backend may be a replay overlay)
        self.header = vhdx.Header.new()
        self.header_slot = 0
        self.regions: list[vhdx.RegionTableEntry] = []
        self.bat_region = vhdx.RegionTableEntry.new()
        self.metadata_offset = 0
        self.metadata_length = 0
        self.region_raw = b""  # the valid region table copy, as read
        self.metadata_entries: list[vhdx.MetadataTableEntry] = []
        self.block_size = 0
        self.block_shift = 0
        self.logical_sector = 512
        self.physical_sector = 512
        self.has_parent = False
        self.leave_allocated = False
        self.disk_id = bytes(16)
        self.chunk_ratio = 0
        self.bat = PagedTable(backend, 0, 0, 8, False, self.table_cache, name="BAT")
        self.locator: dict[str, str] = {}
        self.replayed = 0  # log entries replayed at open
        self.log_head = 0  # where the next log entry goes
        self.log_sequence = 0
        self.session_started = False
        self._bitmaps: dict[int, bytearray] = {}
        self._fd = backend.fd if isinstance(backend, FileBackend) else -1

    # -- open ------------------------------------------------------------------------------

    @classmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        return 100 if head[:8] == b"vhdxfile" else 0

    @classmethod
    def open(cls, path: Path, writable: bool = False, *, share: bool = False,
             **options: Any) -> VhdxEngine:
        if options:
            raise DiskspecError(f"unknown VHDX option(s): {', '.join(sorted(options))}")
        backend = FileBackend(path, writable, share=share)
        engine = cls(backend)
        try:
            engine._open()
        except BaseException:
            backend.close()
            raise
        return engine

    def _open(self) -> None:
        backend = self.backend
        size = backend.size()
        if size < 8 or backend.pread(0, 8) != b"vhdxfile":
            raise NotThisFormatError(f"{backend.path}: no VHDX file identifier")
        if size < MIB:  # the identifier is there: the file was cut short
            raise TruncatedError(f"{backend.path}: truncated to {size} bytes, less than the "
                                 f"{MIB}-byte header section of a VHDX")
        self._read_headers()
        if not self.header.is_log_guid_zero and self.header.log_length:
            self._replay()
        self._read_regions()
        self._read_metadata()
        self._read_bat()

    def _read_headers(self) -> None:
        found, problems = _scan_headers(self.backend)
        self.warnings += problems
        if not found:
            raise CorruptError("no valid VHDX header (both fail their checks)", offset=HEADER_SLOTS[0],
                               path="header")
        # the current header: the valid one with the larger sequence number; slot 1 on a tie
        slot, _, header = max(found, key=lambda f: (f[2].sequence_number, -f[0]))
        self.header, self.header_slot = header, slot

    def copy_damage(self) -> list[str]:
        """What is wrong with the two header copies and the two region table copies as the
        file holds them now (the open-time warnings say what was wrong then)."""
        return _scan_headers(self.backend)[1] + _scan_region_tables(self.backend)[2]

    def forget_copy_damage(self) -> None:
        """After a repair: the warnings about header and region table copies say what the
        file holds now."""
        self.warnings = [w for w in self.warnings if not w.startswith(COPY_WARNINGS)]
        self.warnings += self.copy_damage()

    def _replay(self) -> None:
        ring = log.read_log(self.backend, self.header)
        entries = log.active_sequence(ring, self.header.log_guid)
        if not entries:
            raise CorruptError("the log is marked in use but holds no valid entry sequence",
                               offset=self.header.log_offset, path="header.log_guid")
        head = entries[-1].header
        if self.backend.size() < head.flushed_file_offset:
            raise CorruptError(f"the file is shorter ({self.backend.size()}) than the log says was "
                               f"flushed ({head.flushed_file_offset})", path="log.flushed_file_offset")
        self.replayed = len(entries)
        self.log_sequence = head.sequence_number
        writes = list(log.pages(entries))
        size = max(self.backend.size(), head.last_file_offset)
        for offset, data in writes:  # a valid entry may still name absurd places
            length = data if isinstance(data, int) else len(data)
            if offset + length > MAX_FILE or size > MAX_FILE:
                raise CorruptError(f"a log entry writes at {offset:#x} (+{length}), past any VHDX",
                                   path="log.descriptor.file_offset")
        self._bound_growth(entries, writes)
        if self.writable:
            # the file changes: a new FileWriteGuid first ([MS-VHDX] 2.2.2)
            self.header.file_write_guid = uuid.uuid4().bytes_le
            self.write_header()
            for offset, data in writes:
                if isinstance(data, int):
                    self._write_zeros(offset, data)
                else:
                    self.backend.pwrite(offset, data)
            if self.backend.size() < size:
                self.backend.truncate(size)
            self.backend.flush()
            self.write_header(log_guid=bytes(16))
            self.warnings.append(f"replayed {len(entries)} log entries into the file")
            return
        pages: dict[int, bytes] = {}
        for offset, data in writes:
            if isinstance(data, int) and data > MAX_OVERLAY:
                raise UnsupportedFeatureError(f"replaying a zero range of {data} bytes in memory "
                                              "(open the image read-write to replay it)")
            _overlay_put(pages, offset, data)
            if len(pages) * log.SECTOR > MAX_OVERLAY:
                raise UnsupportedFeatureError("a log replay of more than 256 MiB in memory "
                                              "(open the image read-write to replay it)")
        self.backend = OverlayBackend(self.backend, pages, size)
        self._fd = -1
        self.warnings.append(f"replayed {len(entries)} log entries in memory (the file is untouched)")

    def _bound_growth(self, entries: list[log.Entry], writes: list[tuple[int, bytes | int]]) -> None:
        """A replay may grow the file only to its plausible end; past it, the log is corrupt
        (and nothing is written, or kept in memory, for it).

        The plausible end is the end of the file as it is, or, to grow it, both
        - the entry's last_file_offset ([MS-VHDX] 2.3.1.1: an offset every structure the
          entry refers to fits into), rounded up to 1 MiB as QEMU rounds it, and
        - what the image's layout can need: the header section, the log and every region,
          then a block for every payload BAT entry and 1 MiB for every sector bitmap entry
          (the layout as the replay leaves it: region tables and metadata read through the
          entries' data descriptors).
        """
        path = self.backend.path
        file_size = self.backend.size()
        grows = False
        for e in entries:
            last = round_up(e.header.last_file_offset, MIB)
            grows = grows or e.header.last_file_offset > file_size
            for offset, data in e.writes:
                end = offset + (data if isinstance(data, int) else len(data))
                if end <= file_size:
                    continue
                grows = True
                if end > last:
                    raise CorruptError(
                        f"{path}: log entry {e.sequence} writes at {offset:#x} (to {end:#x}), past "
                        f"the end of the file ({file_size:#x}) and past its last_file_offset "
                        f"({e.header.last_file_offset:#x})", path="log.descriptor.file_offset")
        if not grows:
            return
        target = max([entries[-1].header.last_file_offset] +
                     [o + (d if isinstance(d, int) else len(d)) for o, d in writes])
        need = self._layout_need(writes, target)
        if target > need:
            raise CorruptError(f"{path}: the log would grow the file to {target:#x} bytes, past "
                               f"the {need:#x} bytes a VHDX of this layout can need "
                               f"(the file has {file_size:#x})", path="log.descriptor.file_offset")

    def _layout_need(self, writes: list[tuple[int, bytes | int]], target: int) -> int:
        """The largest file the layout the log leaves can need (see _bound_growth)."""
        pages: dict[int, bytes] = {}
        for offset, data in writes:
            if not isinstance(data, int):
                _overlay_put(pages, offset, data)
        probe = VhdxEngine(OverlayBackend(self.backend, pages, self.backend.size()))
        probe.header = self.header
        try:
            probe._read_regions()
            probe._read_metadata()  # (the codec holds the block size to 1-256 MiB)
        except DiskspecError as exc:
            raise CorruptError(f"{self.backend.path}: the log would grow the file to {target:#x} "
                               f"bytes, and the layout it leaves cannot be read to bound that: "
                               f"{exc}", path="log.descriptor.file_offset") from None
        blocks = ceil_div(probe.virtual_size, probe.block_size)
        cr = probe.chunk_ratio
        entries = ceil_div(blocks, cr) * (cr + 1) if probe.has_parent else \
            blocks + (blocks - 1) // cr if blocks else 0
        structures = max([MIB, self.header.log_offset + self.header.log_length] +
                         [r.file_offset + r.length for r in probe.regions])
        return round_up(structures, MIB) + blocks * probe.block_size + (entries - blocks) * MIB

    def _write_zeros(self, offset: int, length: int) -> None:
        """Zero a range, 1 MiB at a time; past the end of the file, extending is enough."""
        end = min(offset + length, self.backend.size())
        pos = offset
        while pos < end:
            n = min(MIB, end - pos)
            self.backend.pwrite(pos, ZEROS[:n])
            pos += n
        if offset + length > self.backend.size():
            self.backend.truncate(offset + length)

    def _read_regions(self) -> None:
        table, self.region_raw, problems = _scan_region_tables(self.backend)
        self.warnings += problems
        if table is None:
            raise CorruptError("no valid region table", offset=REGION_SLOTS[0], path="region_table")
        self.regions = table.entries
        seen: set[bytes] = set()
        for e in table.entries:
            if e.guid in seen:
                raise CorruptError(f"region {guids.text(e.guid)} appears twice", path="region_table")
            seen.add(e.guid)
            if e.guid not in guids.KNOWN_REGIONS and e.required:
                raise UnsupportedFeatureError(f"required VHDX region {guids.text(e.guid)}")
            if e.file_offset < MIB or e.file_offset + e.length > self.backend.size():
                raise CorruptError(f"region {guids.text(e.guid)} at {e.file_offset:#x} is outside "
                                   "the file", path="region_table.entries")
        by_guid = {e.guid: e for e in table.entries}
        if guids.BAT_REGION not in by_guid or guids.METADATA_REGION not in by_guid:
            raise CorruptError("the region table lacks the BAT or the metadata region", path="region_table")
        spans = sorted((e.file_offset, e.file_offset + e.length) for e in table.entries)
        spans.append((self.header.log_offset, self.header.log_offset + self.header.log_length))
        spans.sort()
        for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False):
            if b_start < a_end:
                raise CorruptError("regions or the log overlap", path="region_table")
        self.bat_region = by_guid[guids.BAT_REGION]
        self.metadata_offset = by_guid[guids.METADATA_REGION].file_offset
        self.metadata_length = by_guid[guids.METADATA_REGION].length

    def _read_metadata(self) -> None:
        raw = self.backend.pread(self.metadata_offset, 64 * KIB)
        table = vhdx.MetadataTable.parse(raw)
        self.metadata_entries = table.entries
        items: dict[bytes, bytes] = {}
        for e in table.entries:
            if e.length and (e.offset < 64 * KIB or e.offset + e.length > self.metadata_length):
                raise CorruptError(f"metadata item {guids.text(e.item_id)} lies outside its region",
                                   path="metadata_table.entries")
            if e.item_id in items:
                raise CorruptError(f"metadata item {guids.text(e.item_id)} appears twice",
                                   path="metadata_table.entries")
            if e.item_id not in guids.KNOWN_ITEMS:
                if e.is_required:
                    raise UnsupportedFeatureError(f"required VHDX metadata item {guids.text(e.item_id)}")
                continue
            items[e.item_id] = self.backend.pread(self.metadata_offset + e.offset, e.length)
        for item in (guids.FILE_PARAMETERS, guids.VIRTUAL_DISK_SIZE, guids.LOGICAL_SECTOR_SIZE):
            if item not in items:
                raise CorruptError(f"metadata item {guids.KNOWN_ITEMS[item]} is missing", path="metadata")
        params = vhdx.FileParameters.parse(items[guids.FILE_PARAMETERS])
        self.block_size = params.block_size
        self.block_shift = params.block_size.bit_length() - 1
        self.has_parent = bool(params.has_parent)
        self.leave_allocated = bool(params.leave_blocks_allocated)
        self.virtual_size = vhdx.VirtualDiskSize.parse(items[guids.VIRTUAL_DISK_SIZE]).virtual_disk_size
        self.logical_sector = vhdx.LogicalSectorSize.parse(
            items[guids.LOGICAL_SECTOR_SIZE]).logical_sector_size
        if guids.PHYSICAL_SECTOR_SIZE in items:
            self.physical_sector = vhdx.PhysicalSectorSize.parse(
                items[guids.PHYSICAL_SECTOR_SIZE]).physical_sector_size
        if guids.VIRTUAL_DISK_ID in items:
            self.disk_id = vhdx.VirtualDiskId.parse(items[guids.VIRTUAL_DISK_ID]).virtual_disk_id
        if self.virtual_size > MAX_SIZE or self.virtual_size % self.logical_sector:
            raise CorruptError(f"virtual size {self.virtual_size} is not a multiple of the sector size "
                               "or exceeds 64 TiB", path="virtual_disk_size")
        self.chunk_ratio = (1 << 23) * self.logical_sector // self.block_size
        if self.has_parent:
            if guids.PARENT_LOCATOR not in items:
                raise CorruptError("a differencing VHDX without a parent locator", path="metadata")
            self.locator = _read_locator(items[guids.PARENT_LOCATOR])

    def _read_bat(self) -> None:
        blocks = ceil_div(self.virtual_size, self.block_size)
        cr = self.chunk_ratio
        if self.has_parent:
            entries = ceil_div(blocks, cr) * (cr + 1)
        else:
            entries = blocks + (blocks - 1) // cr if blocks else 0
        if entries * 8 > self.bat_region.length:
            raise CorruptError(f"the BAT region ({self.bat_region.length} bytes) cannot hold {entries} "
                               "entries", path="region_table.bat")
        # read a page at a time as entries are needed (pages.py): open reads none of it
        self.bat = PagedTable(self.backend, self.bat_region.file_offset, entries, 8, False,
                              self.table_cache, name="BAT", on_load=self._page_loaded)

    def _page_loaded(self, first: int, page: array[int]) -> None:
        """Present payload blocks that would end past the end of the file, or lie over the
        header section, the log or a region, are corruption, found as their BAT page is read
        (a bulk pass finds the present entries; only those are looked at)."""
        size, bs = self.file_backend.size(), self.block_size
        damage: dict[int, str] = {}
        cr = self.chunk_ratio
        for pos in pointing(page):
            index, at = first + pos, page[pos] & OFFSET_MASK
            if index % (cr + 1) == cr:
                continue
            block = index - index // (cr + 1)
            if at + bs > size:
                damage[block] = (f"block {block}: its BAT entry points at {at:#x}, past the end "
                                 f"of the file ({size:#x})")
            elif any(at < hi and lo < at + bs for lo, hi in self.metadata_spans()):
                damage[block] = f"block {block}: its BAT entry points at {at:#x}, into the metadata"
        self.note_damage(damage)

    def metadata_spans(self) -> list[tuple[int, int]]:
        """The file ranges of the header section, the log and every region."""
        return [(0, MIB), (self.header.log_offset, self.header.log_offset + self.header.log_length),
                *((r.file_offset, r.file_offset + r.length) for r in self.regions)]

    # -- the parent ------------------------------------------------------------------------

    @property
    def needs_parent(self) -> bool:
        return self.has_parent

    def parent_candidates(self) -> list[tuple[str, Path]]:
        child_dir = self.file_backend.path.parent
        out: list[tuple[str, Path]] = []
        rel = self.locator.get("relative_path")
        if rel:
            out.append(("relative_path", child_dir.joinpath(*PureWindowsPath(rel).parts)))
        for key in ("volume_path", "absolute_win32_path"):
            value = self.locator.get(key)
            if not value:
                continue
            text = value[4:] if value.startswith("\\\\?\\") else value
            win = PureWindowsPath(text)
            if not win.drive and text.startswith("/"):
                out.append((key, Path(text)))
            out.append((f"{key} (file name beside the child)", child_dir / win.name))
        return out

    def accept_parent(self, parent: Any, explicit: bool) -> None:
        problems = []
        pe = parent.engine
        linkage = {self.locator.get(k, "").strip("{}").lower()
                   for k in ("parent_linkage", "parent_linkage2")} - {""}
        if isinstance(pe, VhdxEngine):
            have = guids.text(pe.header.data_write_guid).lower()
            if have not in linkage:
                problems.append(f"data write GUID {have} is not the parent_linkage "
                                f"{', '.join(sorted(linkage)) or '(none)'}")
            if pe.logical_sector != self.logical_sector:
                problems.append(f"logical sector size {pe.logical_sector} differs from {self.logical_sector}")
        else:
            self.warnings.append(f"parent {parent.path} is {pe.format_name}: linkage not checkable")
        if parent.size != self.virtual_size:
            problems.append(f"size {parent.size} differs from the child's {self.virtual_size}")
        if problems and not explicit:
            raise ParentMissingError(f"{parent.path}: " + "; ".join(problems))
        self.warnings += [f"parent {parent.path}: {p} (accepted: chosen explicitly)" for p in problems]

    # -- mapping ---------------------------------------------------------------------------

    def payload_entry(self, block: int) -> int:
        return self.bat[block + block // self.chunk_ratio]

    def data_offset(self, index: int, length: int) -> int:
        """The file offset BAT entry `index` points at, checked: `length` bytes there that
        would end past anything a VHDX holds (MAX_FILE) are corruption, never an OverflowError."""
        at = self.bat[index] & OFFSET_MASK
        if at + length > MAX_FILE:
            raise self._beyond(index, at)
        return at

    def _beyond(self, index: int, at: int) -> CorruptError:
        cr = self.chunk_ratio
        what = f"the sector bitmap of chunk {index // (cr + 1)}" if index % (cr + 1) == cr \
            else f"block {index - index // (cr + 1)}"
        return CorruptError(f"{what} of {self.backend.path} is at file offset {at:#x}, past "
                            f"anything a VHDX holds", offset=self.bat_region.file_offset + 8 * index,
                            path="bat")

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        end = min(offset + length, self.virtual_size)
        bs = self.block_size
        empty = State.BACKING if self.has_parent else State.ZERO
        pos = offset
        while pos < end:
            block = pos >> self.block_shift
            stop = min(end, (block + 1) * bs)
            index = block + block // self.chunk_ratio
            entry = self.bat[index]  # (loading its page finds damage in it)
            if block in self.damage:
                raise self.damage_error(block)
            state = entry & 7
            base = entry & OFFSET_MASK
            if base + bs > MAX_FILE and state in (PBS.FULLY_PRESENT, PBS.PARTIALLY_PRESENT):
                raise self._beyond(index, base)
            base -= block * bs
            if state == PBS.FULLY_PRESENT:
                yield Extent(pos, stop - pos, State.DATA, base + pos)
            elif state == PBS.NOT_PRESENT or state in ZERO_STATES:
                stop = min(end, self._same_entries(block, end) * bs)
                yield Extent(pos, stop - pos, empty if state == PBS.NOT_PRESENT else State.ZERO)
            elif state == PBS.PARTIALLY_PRESENT and self.has_parent:
                yield from self._bitmap_extents(block, pos, stop, base)
            else:
                raise CorruptError(f"block {block} has state {state}, invalid here",
                                   offset=self.bat_region.file_offset + 8 * (
                                       block + block // self.chunk_ratio), path="bat")
            pos = stop

    def _same_entries(self, block: int, end: int) -> int:
        """The first block at or after `block` (up to the one holding guest offset `end`)
        whose BAT entry differs from block's, found in bulk over the table (the sector bitmap
        entries in between do not count)."""
        cr = self.chunk_ratio
        last = ((end - 1) >> self.block_shift) + 1
        j = self.bat.run_end(block + block // cr, last + (last - 1) // cr + 1, skip=(cr + 1, cr))
        return min(last, max(block + 1, j - j // (cr + 1)))

    def _bitmap_extents(self, block: int, pos: int, stop: int, base: int) -> Iterator[Extent]:
        lss = self.logical_sector
        bitmap = self._bitmap(block // self.chunk_ratio)
        chunk_first = (block // self.chunk_ratio) * self.chunk_ratio * self.block_size
        sector = (pos - chunk_first) // lss
        limit = ceil_div(stop - chunk_first, lss)
        while pos < stop:
            bit = bitmaps.bit(bitmap, sector, MSB_FIRST)
            run_end = bitmaps.run_end(bitmap, sector, bit, limit, MSB_FIRST)
            nxt = min(stop, chunk_first + run_end * lss)
            yield Extent(pos, nxt - pos, State.DATA, base + pos) if bit else \
                Extent(pos, nxt - pos, State.BACKING)
            pos, sector = nxt, run_end

    def bitmap_index(self, chunk: int) -> int:
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def _bitmap(self, chunk: int) -> bytearray:
        bitmap = self._bitmaps.get(chunk)
        if bitmap is None:
            entry = self.bat[self.bitmap_index(chunk)]
            if entry & 7 != SBS.PRESENT:
                raise CorruptError(f"chunk {chunk} has partially present blocks but no sector bitmap",
                                   path="bat")
            bitmap = bytearray(self.backend.pread(self.data_offset(self.bitmap_index(chunk), MIB), MIB))
            if len(self._bitmaps) >= BITMAP_CACHE:
                del self._bitmaps[next(iter(self._bitmaps))]
            self._bitmaps[chunk] = bitmap
        return bitmap

    # -- reading ---------------------------------------------------------------------------

    def readinto(self, offset: int, buf: memoryview) -> None:
        if self.has_parent or self.damage:  # through extents(), which name damaged blocks
            super().readinto(offset, buf)
            return
        bs, shift, cr, bat = self.block_size, self.block_shift, self.chunk_ratio, self.bat
        done, n = 0, len(buf)
        while done < n:
            pos = offset + done
            block = pos >> shift
            within = pos - (block << shift)
            take = min(n - done, bs - within)
            entry = bat[block + block // cr]
            if self.damage:  # its page may just have been read, and found damaged
                super().readinto(pos, buf[done:])
                return
            part = buf[done : done + take]
            state = entry & 7
            if state == PBS.FULLY_PRESENT:
                self.backend.readinto(self.data_offset(block + block // cr, bs) + within, part)
            elif state == PBS.NOT_PRESENT or state in ZERO_STATES:
                fill_zero(part)
            else:
                raise CorruptError(f"block {block} has state {state}, invalid here", path="bat")
            done += take

    def fast_reader(self, general: Callable[[int, memoryview], None]
                    ) -> Callable[[int, memoryview], None]:
        fd = self._fd
        if fd < 0 or self.has_parent or self.damage:
            return general
        bat, shift, bs, cr, size, preadv = (self.bat, self.block_shift, self.block_size,
                                            self.chunk_ratio, self.virtual_size, os.preadv)
        # the BAT pages in memory, indexed directly; a miss goes through bat[] (and loads)
        pages, pshift, pmask, damage = bat.loaded(), bat.shift, bat.per_page - 1, self.damage
        zeros, zlen = ZEROS, len(ZEROS)
        zero_states = frozenset(int(s) for s in ZERO_STATES | {PBS.NOT_PRESENT})

        def read(offset: int, buf: memoryview) -> None:
            n = len(buf)
            block = offset >> shift
            within = offset - (block << shift)
            if within + n <= bs and offset + n <= size and not damage:  # (general names it)
                index = block + block // cr
                page = pages.get(index >> pshift)
                entry = bat[index] if page is None else page[index & pmask]
                state = entry & 7
                if state == 6:
                    try:
                        if preadv(fd, [buf], (entry & OFFSET_MASK) + within) == n:
                            return
                    except OverflowError:  # an offset no file has: general() names the block
                        pass
                elif state in zero_states and n <= zlen:  # not present, zero, unmapped...
                    buf[:] = zeros[:n]
                    return
            general(offset, buf)

        return read

    def fast_pread(self, general: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
        """One os.pread for a read inside one fully present block whose BAT page is in memory;
        anything else goes to `general` (which loads pages and names damaged blocks)."""
        fd = self._fd
        if fd < 0 or self.has_parent or self.damage:
            return general
        pread, shift, bs, cr, size = os.pread, self.block_shift, self.block_size, \
            self.chunk_ratio, self.virtual_size
        pages, pshift, pmask, damage = self.bat.loaded(), self.bat.shift, self.bat.per_page - 1, \
            self.damage

        def pread_block(offset: int, length: int) -> bytes:
            block = offset >> shift
            within = offset - (block << shift)
            index = block + block // cr
            page = pages.get(index >> pshift)
            if within + length <= bs and offset + length <= size and page is not None \
                    and not damage:
                entry = page[index & pmask]
                if entry & 7 == 6:
                    try:
                        data = pread(fd, length, (entry & OFFSET_MASK) + within)
                    except OverflowError:  # an offset no file has: general() names the block
                        return general(offset, length)
                    if len(data) == length:
                        return data
            return general(offset, length)

        return pread_block

    # -- sessions, headers and the log -------------------------------------------------------

    def write_header(self, log_guid: bytes | None = None, new_guids: bool = False) -> None:
        """The header update protocol: write the next sequence into the other slot, flush;
        then once more into the first, so both are current ([MS-VHDX] 2.2.2.1)."""
        h = self.header
        if log_guid is not None:
            h.log_guid = log_guid
        if new_guids:
            h.file_write_guid = uuid.uuid4().bytes_le
            h.data_write_guid = uuid.uuid4().bytes_le
        for _ in range(2):
            h.sequence_number += 1
            self.header_slot ^= 1
            h.update_checksum()
            self.file_backend.pwrite(HEADER_SLOTS[self.header_slot], h.build())
            self.barrier()

    def start_session(self) -> None:
        """Before the first change: new file/data write GUIDs and a fresh log GUID."""
        if self.session_started:
            return
        self.require_writable()
        log_guid = uuid.uuid4().bytes_le
        # an empty entry under the new GUID before the header names it: a session cut short
        # before its first metadata change still has a valid log (openvmm does the same)
        self.log_sequence += 1
        empty = log.build_entry(self.log_sequence, 0, log_guid, self.file_backend.size() // MIB * MIB,
                                round_up(self.file_backend.size(), MIB), [])
        self.file_backend.pwrite(self.header.log_offset, empty)
        self.barrier()
        self.write_header(log_guid=log_guid, new_guids=True)
        self.log_head = len(empty)
        self.session_started = True

    def log_and_apply(self, pages: list[tuple[int, bytes]]) -> None:
        """Metadata pages through the log: entry, flush, apply, flush."""
        size = self.file_backend.size()
        last = round_up(size, MIB)
        self.log_sequence += 1
        entry = log.build_entry(self.log_sequence, self.log_head, self.header.log_guid,
                                size // MIB * MIB, last, pages)
        log_len = self.header.log_length
        if len(entry) + log.SECTOR > log_len:
            raise UnsupportedFeatureError(f"a metadata update of {len(pages)} pages does not fit the log")
        at = self.log_head if self.log_head + len(entry) <= log_len else 0
        if at != self.log_head:  # wrap; the entry's tail must name its own offset
            entry = log.build_entry(self.log_sequence, 0, self.header.log_guid,
                                    size // MIB * MIB, last, pages)
        self.file_backend.pwrite(self.header.log_offset + at, entry)
        self.barrier()
        for offset, page in pages:
            self.file_backend.pwrite(offset, page)
        self.barrier()
        self.log_head = (at + len(entry)) % log_len
        self.bat.settle()  # the changed BAT entries are in the file now

    def bat_pages(self, indexes: list[int]) -> list[tuple[int, bytes]]:
        """The 4 KiB BAT pages holding `indexes`, with the in-memory entries."""
        pages = sorted({i * 8 // log.SECTOR for i in indexes})
        out = []
        per = log.SECTOR // 8
        for p in pages:
            first = p * per
            raw = self.bat.encode(first, first + per)
            if len(raw) < log.SECTOR:  # the page runs past the BAT: keep the region's bytes
                tail_at = self.bat_region.file_offset + first * 8 + len(raw)
                raw += self.file_backend.pread(tail_at, log.SECTOR - len(raw))
            out.append((self.bat_region.file_offset + p * log.SECTOR, raw))
        return out

    def flush(self) -> None:
        self.file_backend.flush()

    def finish(self) -> None:
        if self.session_started and self.writable:
            self.barrier()
            self.write_header(log_guid=bytes(16))  # clean: nothing left to replay
            self.session_started = False

    # -- writing ---------------------------------------------------------------------------

    def write(self, offset: int, data: memoryview) -> None:
        self.require_writable()
        if offset < 0 or offset + len(data) > self.virtual_size:
            raise DiskspecError(f"write at {offset} of {len(data)} bytes is outside the disk")
        self.start_session()
        bs, shift = self.block_size, self.block_shift
        done = 0
        while done < len(data):
            pos = offset + done
            block = pos >> shift
            within = pos - (block << shift)
            take = min(len(data) - done, bs - within)
            self._write_block(block, within, data[done : done + take])
            done += take

    def _write_block(self, block: int, within: int, piece: memoryview) -> None:
        index = block + block // self.chunk_ratio
        entry = self.bat[index]
        if self.damage:  # its page may just have been read, and found damaged
            self.require_writable()
        state = entry & 7
        if state == PBS.FULLY_PRESENT:
            self.file_backend.pwrite(self.data_offset(index, self.block_size) + within, piece)
            return
        if state == PBS.PARTIALLY_PRESENT:
            lo, piece = self._whole_sectors(block, within, piece)
            self.file_backend.pwrite(self.data_offset(index, self.block_size) + lo, piece)
            self._set_bits(block, lo, len(piece))  # data first, then the bits (via the log)
            return
        # a new block: where the file ends, 1 MiB aligned, zero-filled by extension
        at = self.allocate_space(self.block_size)
        full = within == 0 and len(piece) == self.block_size
        if self.has_parent and state == PBS.NOT_PRESENT and not full:
            lo, piece = self._whole_sectors(block, within, piece)
            self.file_backend.pwrite(at + lo, piece)
            self.barrier()
            self.bat[index] = at | PBS.PARTIALLY_PRESENT
            self._set_bits(block, lo, len(piece), also=[index])
            return
        self.file_backend.pwrite(at + within, piece)
        self.barrier()  # the data is durable before the BAT points at it
        self.bat[index] = at | PBS.FULLY_PRESENT
        self.log_and_apply(self.bat_pages([index]))

    def allocate_space(self, length: int) -> int:
        at = round_up(self.file_backend.size(), MIB)
        self.file_backend.truncate(at + length)
        return at

    def _whole_sectors(self, block: int, within: int, piece: memoryview) -> tuple[int, memoryview]:
        """Widen a write to whole logical sectors, edges filled from the disk as it reads now."""
        lss = self.logical_sector
        start = within - within % lss
        stop = round_up(within + len(piece), lss)
        if start == within and stop == within + len(piece):
            return within, piece
        buf = bytearray(stop - start)
        view = memoryview(buf)
        guest = (block << self.block_shift) + start
        if start != within:
            self._read_guest(guest, view[:lss])
        if stop != within + len(piece):
            self._read_guest(guest + len(buf) - lss, view[len(buf) - lss :])
        view[within - start : within - start + len(piece)] = piece
        return start, view

    def _read_guest(self, offset: int, buf: memoryview) -> None:
        if self.has_parent and self.backing is None:
            raise UnsupportedFeatureError(
                "a partial-sector write to a differencing VHDX opened without its parent")
        self.readinto(offset, buf)

    def _set_bits(self, block: int, within: int, length: int, also: list[int] | None = None) -> None:
        """Mark sectors present in the chunk's sector bitmap (allocating it if needed) and log
        the changed bitmap pages together with BAT pages in one entry."""
        chunk = block // self.chunk_ratio
        sb_index = self.bitmap_index(chunk)
        indexes = list(also or [])
        if self.bat[sb_index] & 7 != SBS.PRESENT:
            at = self.allocate_space(MIB)  # zero-filled: every sector reads from the parent
            self.bat[sb_index] = at | SBS.PRESENT
            self._bitmaps[chunk] = bytearray(MIB)
            indexes.append(sb_index)
        bitmap = self._bitmap(chunk)
        lss = self.logical_sector
        first = (block % self.chunk_ratio) * (self.block_size // lss) + within // lss
        count = length // lss
        changed = bitmaps.set_range(bitmap, first, first + count, MSB_FIRST, granule=log.SECTOR)
        base = self.bat[sb_index] & OFFSET_MASK
        pages = [(base + p * log.SECTOR, bytes(bitmap[p * log.SECTOR : (p + 1) * log.SECTOR]))
                 for p in sorted(changed)]
        pages += self.bat_pages(indexes) if indexes else []
        if pages:
            self.barrier()  # the data is durable before the log says its sectors are present
            self.log_and_apply(pages)

    # -- reporting -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        counts = {_state_name(state): n for state, n in enumerate(self._state_counts()) if n}
        out: dict[str, Any] = {
            "format": self.format_name,
            "virtual-size": self.virtual_size,
            "cluster-size": self.block_size,
            "format-specific": {"type": "vhdx", "data": {
                "block-size": self.block_size,
                "logical-sector-size": self.logical_sector,
                "physical-sector-size": self.physical_sector,
                "subformat": "differencing" if self.has_parent else
                ("fixed" if self.leave_allocated else "dynamic"),
                "virtual-disk-id": guids.text(self.disk_id),
                "data-write-guid": guids.text(self.header.data_write_guid),
                "log-replayed-entries": self.replayed,
                "block-states": counts,
                **({"parent-locator": dict(self.locator)} if self.locator else {}),
            }},
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _state_counts(self) -> list[int]:
        """How many blocks are in each payload state (0-7): the table's low bytes, page by
        page, counted in bulk (the sector bitmap entries among them taken out again)."""
        blocks = ceil_div(self.virtual_size, self.block_size)
        if not blocks:
            return [0] * 8
        cr = self.chunk_ratio
        counts = [0] * 8
        for first, chunk in self.bat.chunks(0, blocks - 1 + (blocks - 1) // cr + 1):
            states = chunk.tobytes()[_LOW_BYTE::8].translate(_STATE)
            bitmaps = states[(cr - first % (cr + 1)) % (cr + 1) :: cr + 1]
            for state in range(8):
                counts[state] += states.count(state) - bitmaps.count(state)
        return counts

    def check(self, repair: bool = False) -> CheckResult:
        from .check import check

        return check(self, repair)

    def resize(self, new_size: int) -> None:
        from .resize import resize

        resize(self, new_size)

    @classmethod
    def create(cls, path: Path, size: int | None, **options: Any) -> VhdxEngine:
        from .create import create

        return create(path, size, **options)


def _state_name(state: int) -> str:
    try:
        return PBS(state).name.lower()
    except ValueError:
        return f"invalid-{state}"


_ZERO_PAGE = bytes(log.SECTOR)
#: where an entry's state bits are among its 8 bytes in memory, and the byte -> its state
_LOW_BYTE = 0 if sys.byteorder == "little" else 7
_STATE = bytes(b & 7 for b in range(256))
#: the byte holding an entry's state -> 1 when the state points at file space (6 and 7)
_POINTS = bytes(1 if b & 7 in (PBS.FULLY_PRESENT, PBS.PARTIALLY_PRESENT) else 0 for b in range(256))


def pointing(page: array[int]) -> Iterator[int]:
    """The positions in a page of BAT entries whose state points at file space (fully or
    partially present, or a present sector bitmap), found in bulk: a page of a sparse table
    costs one pass in C."""
    states = page.tobytes()[_LOW_BYTE::8].translate(_POINTS)
    pos = states.find(1)
    while pos >= 0:
        yield pos
        pos = states.find(1, pos + 1)


#: the beginnings of the warnings about damaged header and region table copies
COPY_WARNINGS = ("header", "region table")


def _scan_headers(backend: Backend) -> tuple[list[tuple[int, int, vhdx.Header]], list[str]]:
    """The valid header copies (slot, offset, header) and what is wrong with the others."""
    found: list[tuple[int, int, vhdx.Header]] = []
    problems: list[str] = []
    for slot, at in enumerate(HEADER_SLOTS):
        raw = backend.pread(at, vhdx.Header.SIZE)
        if raw[:4] != b"head" or not vhdx.Header.verify_buffer(raw):
            problems.append(f"header {slot + 1} at {at:#x} is invalid (signature or CRC-32C)")
            continue
        try:
            found.append((slot, at, vhdx.Header.parse(raw)))
        except CorruptError as exc:
            problems.append(f"header {slot + 1} at {at:#x}: {exc}")
    return found, problems


def _scan_region_tables(backend: Backend) -> tuple[vhdx.RegionTable | None, bytes, list[str]]:
    """The first valid region table copy (or None), its bytes, and what is wrong with the
    copies (invalid, or the two valid ones differ)."""
    table, table_raw = None, b""
    problems: list[str] = []
    copies = [backend.pread(at, 64 * KIB) for at in REGION_SLOTS]
    for copy, (at, raw) in enumerate(zip(REGION_SLOTS, copies, strict=True)):
        try:
            if raw[:4] != b"regi" or not vhdx.RegionTable.verify_buffer(raw):
                raise CorruptError("bad signature or CRC-32C")
            parsed = vhdx.RegionTable.parse(raw)
        except CorruptError as exc:
            problems.append(f"region table {copy + 1} at {at:#x} is invalid: {exc}")
            continue
        if table is None:
            table, table_raw = parsed, raw
    if table is not None and copies[0] != copies[1] and not problems:
        problems.append("region table 2 differs from region table 1")
    return table, table_raw, problems


def _overlay_put(pages: dict[int, bytes], offset: int, data: bytes | int) -> None:
    """Record a replayed write (bytes, or a zero range's length); later writes to the same
    4 KiB pages replace earlier ones. Zero pages share one buffer."""
    if isinstance(data, int):
        for i in range(0, data, log.SECTOR):
            pages[offset + i] = _ZERO_PAGE
        return
    for i in range(0, len(data), log.SECTOR):
        pages[offset + i] = data[i : i + log.SECTOR]


def _read_locator(raw: bytes) -> dict[str, str]:
    loc = vhdx.ParentLocator.parse(raw)
    if loc.header.locator_type != guids.VHDX_LOCATOR_TYPE:
        raise UnsupportedFeatureError(f"parent locator type {guids.text(loc.header.locator_type)}")
    out: dict[str, str] = {}
    for e in loc.entries:
        try:
            out[e.key] = e.value
        except CorruptError as exc:
            raise CorruptError(f"parent locator entry: {exc}", path="parent_locator") from None
    return out
