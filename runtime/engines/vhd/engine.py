"""The VHD engine: open, map, read and write fixed, dynamic and differencing images.

Layouts come from the generated codecs (`diskspec.formats.vhd`); this module holds the
rules: which footer to trust, how guest offsets map to blocks and sector bitmaps, and the
crash-safe order of allocation (vhd.md 9.3): footer at the new end, then bitmap and data,
then the BAT entry, each step made durable before the next.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from diskspec.formats import vhd

from ... import bitmap as bitmaps
from ...backend import Backend, FileBackend, SplitBackend
from ...engine import Capabilities, CheckResult, Engine
from ...errors import (
    ChecksumError,
    CorruptError,
    DiskspecError,
    NotThisFormatError,
    ParentMissingError,
    TruncatedError,
    UnsupportedFeatureError,
)
from ...extent import Extent, State
from ...pages import PagedTable
from ...tables import other_positions
from ...util import ZEROS, ceil_div, fill_zero, round_up
from . import geometry, locators
from .split import split_parts

SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
FOOTER = vhd.Footer.SIZE
HEADER = vhd.DynamicHeader.SIZE
COOKIE = b"conectix"
#: differencing bitmaps kept in memory (each is 512 bytes for 2 MiB blocks)
BITMAP_CACHE = 4096
MSB_FIRST = True  # VHD sector bitmaps: sector 0 is the most significant bit of byte 0
#: the largest BAT we read (256 MiB; 2 TiB in 2 MiB blocks needs 1 Mi entries)
MAX_BAT_ENTRIES = 1 << 26
#: alignment of the data of the blocks we allocate
ALIGN = 4096


class VhdEngine(Engine):
    format_name = "vpc"
    capabilities = Capabilities(
        create=True, write=True, backing=True, rebase=True, resize=True, check=True, repair=True,
        commit_target=True,
        create_options={
            "size": "Virtual disk size (rounded up to a CHS geometry unless force_size=on)",
            "subformat": "Type of virtual hard disk file: dynamic (default), fixed or differencing",
            "force_size": "Keep the exact size given (creator 'qem2'; no CHS rounding) [on/off]",
            "block_size": "Block size of a dynamic or differencing image (default 2M, a power of two)",
            "creator": "Creator application tag (up to 4 characters)",
            "backing_file": "Parent image of a differencing image (same as -b)",
            "backing_fmt": "Format of the parent image (same as -F)",
        },
        backing_create={"subformat": "differencing"},
        variants={"dynamic": {"subformat": "dynamic", "force_size": True},
                  "fixed": {"subformat": "fixed", "force_size": True},
                  "dynamic-512k": {"subformat": "dynamic", "force_size": True, "block_size": 512 << 10}})

    def __init__(self, backend: Backend, footer: vhd.Footer, size_rule: str):
        super().__init__(backend)
        self.footer = footer
        self.size_rule = size_rule
        self.disk_type = footer.disk_type
        self.virtual_size = geometry.virtual_size(footer, size_rule)
        self.header: vhd.DynamicHeader | None = None
        self.bat = PagedTable(backend, 0, 0, 4, True, self.table_cache, name="BAT")
        self.block_size = 0
        self.block_shift = 0
        self.bitmap_bytes = 0  # sector bitmap size on disk, padded to whole sectors
        self.data_end = 0  # where the next block goes (the footer's current offset)
        self.file_size = 0
        #: a fixed image whose size rule claims more than the file's data: what it claims
        self.size_overrun = ""
        self._bitmaps: dict[int, bytearray] = {}
        #: the descriptor for the one-block fast path (-1 for split images)
        self._fd: int = backend.fd if isinstance(backend, FileBackend) else -1

    # -- open ------------------------------------------------------------------------------

    @classmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        if head[:8] == COOKIE or tail[-FOOTER:][:8] == COOKIE:
            return 100
        if len(tail) >= 511 and tail[-511:][:8] == COOKIE:
            return 90  # footer of Virtual PC before 2004: 511 bytes
        if path.suffix.lower() == ".vhd" and len(split_parts(path)) > 1:
            return 50  # first piece of a split fixed image: no signature in this file
        return 0

    @classmethod
    def open(cls, path: Path, writable: bool = False, size_rule: str = "auto", *,
             share: bool = False, **options: Any) -> VhdEngine:
        if options:
            raise DiskspecError(f"unknown VHD option(s): {', '.join(sorted(options))}")
        parts = split_parts(path)
        backend: Backend = SplitBackend(parts, writable, share=share) if len(parts) > 1 else \
            FileBackend(path, writable, share=share)
        try:
            engine = cls._open(backend, size_rule)
        except BaseException:
            backend.close()
            raise
        if len(parts) > 1:
            engine.warnings.append(f"split image of {len(parts)} pieces")
        return engine

    @classmethod
    def _open(cls, backend: Backend, size_rule: str) -> VhdEngine:
        size = backend.size()
        footer, footer_at, notes = cls._find_footer(backend, size)
        engine = cls(backend, footer, size_rule)
        engine.warnings += notes
        engine.file_size = size
        if footer.format_version >> 16 != 1:
            engine.warnings.append(f"footer format version {footer.format_version:#x} (expected 0x10000)")
        if engine.virtual_size > geometry.MAX_SECTORS * SECTOR:
            raise UnsupportedFeatureError(
                f"VHD virtual size {engine.virtual_size} exceeds the format's 2040 GiB limit")
        if footer.disk_type == vhd.DiskType.FIXED:
            if footer.current_size > footer_at:
                raise TruncatedError(
                    f"fixed VHD claims {footer.current_size} bytes of data, file holds {footer_at}",
                    offset=footer_at, path="footer.current_size")
            engine.data_end = footer_at
            engine.clamp_to_data(footer_at)
        elif footer.disk_type in (vhd.DiskType.DYNAMIC, vhd.DiskType.DIFFERENCING):
            engine._open_dynamic(footer_at)
        else:
            raise UnsupportedFeatureError(f"VHD disk type {int(footer.disk_type)}")
        return engine

    def clamp_to_data(self, footer_at: int) -> None:
        """A fixed VHD's disk is the data before its footer: a size rule (the CHS geometry)
        that claims more is corruption. The disk is cut to the data the file holds, so no
        read returns the footer as guest data and no write reaches it; check reports it."""
        held = footer_at // SECTOR * SECTOR
        if self.virtual_size <= held:
            return
        g = self.footer.disk_geometry
        self.size_overrun = (
            f"the geometry {g.cylinders}/{g.heads}/{g.sectors_per_track} (size rule "
            f"{self.size_rule}) claims {self.virtual_size} bytes, but the file holds {held} bytes "
            "of data before its footer")
        self.warnings.append(f"{self.backend.path}: {self.size_overrun}: the disk is cut to "
                             f"{held} bytes (corrupt)")
        self.virtual_size = held

    @staticmethod
    def _find_footer(backend: Backend, size: int) -> tuple[vhd.Footer, int, list[str]]:
        """The footer to trust (vhd.md 2.1), where it is, and notes about the other copy."""
        if size < FOOTER:
            raise NotThisFormatError(f"{backend.path}: {size} bytes is too small for a VHD")
        notes: list[str] = []
        tail = backend.pread(size - FOOTER, FOOTER)
        at = size - FOOTER
        if tail[:8] != COOKIE and backend.pread(size - 511, 8) == COOKIE:
            tail, at = backend.pread(size - 511, 511) + b"\0", size - 511  # pre-2004 footer
        head = backend.pread(0, FOOTER)
        copy_ok = head[:8] == COOKIE and vhd.Footer.verify_buffer(head)
        if tail[:8] == COOKIE and vhd.Footer.verify_buffer(tail):
            footer = vhd.Footer.parse(tail)
            if head[:8] == COOKIE and head != tail and footer.disk_type != vhd.DiskType.FIXED:
                notes.append("the footer copy at offset 0 differs from the footer at the end")
            return footer, at, notes
        if copy_ok:
            reason = "has a bad checksum" if tail[:8] == COOKIE else "is missing"
            notes.append(f"the footer at the end of the file {reason}; using the copy at offset 0")
            # the end of the data is then unknown: allocation appends after everything
            return vhd.Footer.parse(head), size, notes
        if tail[:8] == COOKIE or head[:8] == COOKIE:
            stored = vhd.Footer.parse(tail if tail[:8] == COOKIE else head).checksum
            raise ChecksumError(f"VHD footer checksum {stored:#x} is wrong and no valid copy exists",
                                offset=at, path="footer.checksum")
        raise NotThisFormatError(f"{backend.path}: no VHD footer (cookie 'conectix') found")

    def _open_dynamic(self, footer_at: int) -> None:
        size = self.file_size
        off = self.footer.data_offset
        if off % SECTOR or off + HEADER > size:
            raise CorruptError(f"dynamic header offset {off:#x} is outside the file",
                               offset=off, path="footer.data_offset")
        raw = self.backend.pread(off, HEADER)
        header = vhd.DynamicHeader.parse(raw)
        if not header.verify_checksum():
            raise ChecksumError(f"dynamic header checksum {header.checksum:#x} is wrong",
                                offset=off + 36, path="dynamic_header.checksum")
        self.header = header
        bs = header.block_size
        if bs < SECTOR or bs & (bs - 1):
            raise CorruptError(f"block size {bs} is not a power of two of at least 512",
                               offset=off + 32, path="dynamic_header.block_size")
        self.block_size, self.block_shift = bs, bs.bit_length() - 1
        spb = bs // SECTOR
        self.bitmap_bytes = round_up(ceil_div(spb, 8), SECTOR)
        n = header.max_table_entries
        table = header.table_offset
        # bounded by the file: a header that claims a billion entries fails here, cheaply
        if table % SECTOR or table + 4 * n > size:
            raise CorruptError(f"BAT of {n} entries at {table:#x} extends past the end of the file "
                               f"({size} bytes)", offset=off + 28, path="dynamic_header.max_table_entries")
        needed = ceil_div(self.virtual_size, bs)
        if n < needed:
            raise CorruptError(f"BAT has {n} entries but the disk needs {needed}",
                               offset=off + 28, path="dynamic_header.max_table_entries")
        if needed > MAX_BAT_ENTRIES:
            raise UnsupportedFeatureError(f"a VHD of {needed} blocks (the limit is {MAX_BAT_ENTRIES}; "
                                          "use a larger block size)")
        # entries past the disk are ignored (vhd.md 6): only what the disk uses, read a page
        # at a time as it is needed (pages.py): open reads none of it
        self.bat = PagedTable(self.backend, table, needed, 4, True, self.table_cache, name="BAT",
                              on_load=self._page_loaded)
        self.data_end = footer_at
        if footer_at >= size:  # footer came from the copy at 0
            if self.backend.pread(size - FOOTER, 8) == COOKIE:  # a damaged footer: replace it there
                self.data_end = size - FOOTER
            else:  # no footer at the end: append after every structure
                self.data_end = round_up(max(size, self.structures_end()), SECTOR)

    def _page_loaded(self, first: int, page: array[int]) -> None:
        """BAT entries whose block would lie past the end of the file or over the footer
        copy, the dynamic header or the BAT are corruption, found as their page is read: two
        bulk scans (min and max); the entries are looked at one by one only when one is off."""
        assert self.header is not None
        span = self.bitmap_bytes + self.block_size
        end = max(self.data_end, self.file_size - FOOTER)
        last = (end - span) // SECTOR  # the highest sector a block may start at
        table_end = self.header.table_offset + 4 * len(self.bat)
        meta = [(0, FOOTER), (self.footer.data_offset, self.footer.data_offset + HEADER),
                (self.header.table_offset, table_end)]
        low = min(page, default=UNALLOCATED)
        if low == UNALLOCATED:  # nothing allocated in this page
            return
        high = max(filter(UNALLOCATED.__ne__, page))
        if high <= last and low * SECTOR >= max(hi for _, hi in meta):
            return
        damage: dict[int, str] = {}
        for pos in other_positions(page, UNALLOCATED):
            block, entry = first + pos, page[pos]
            start = entry * SECTOR
            if entry > last:
                damage[block] = (f"block {block}: its BAT entry points at {start:#x}, past the "
                                 f"end of the data ({end:#x})")
            elif any(start < hi and lo < start + span for lo, hi in meta):
                damage[block] = f"block {block}: its BAT entry points at {start:#x}, into the metadata"
        self.note_damage(damage)

    def structures_end(self) -> int:
        """End of the BAT, the locator areas and every allocated block."""
        assert self.header is not None
        end = self.header.table_offset + 4 * len(self.bat)
        for loc in self.header.parent_locators:
            if loc.platform_code != vhd.PlatformCode.NONE:
                end = max(end, loc.platform_data_offset + (locators.reserved_bytes(loc) or 0))
        span = self.bitmap_bytes + self.block_size
        high = max((e for _, e in self.bat.other_positions(UNALLOCATED)), default=None)
        if high is not None:
            end = max(end, high * SECTOR + span)
        return end

    # -- differencing: the parent ----------------------------------------------------------

    @property
    def differencing(self) -> bool:
        return self.disk_type == vhd.DiskType.DIFFERENCING

    @property
    def needs_parent(self) -> bool:
        return self.differencing

    def parent_candidates(self) -> list[tuple[str, Path]]:
        assert self.header is not None
        child_dir = self.backend.path.parent
        entries = {int(e.platform_code): e for e in self.header.parent_locators
                   if e.platform_code != vhd.PlatformCode.NONE}
        out: list[tuple[str, Path]] = []
        for code in locators.PREFERENCE:
            entry = entries.get(int(code))
            if entry is None:
                continue
            reserved = locators.reserved_bytes(entry)
            length = entry.platform_data_length
            if reserved is None or length > min(reserved, locators.MAX_LOCATOR) or \
                    entry.platform_data_offset + length > self.file_size:
                self.warnings.append(f"parent locator {code.name} is malformed; ignored")
                continue
            text = locators.decode(code, self.backend.pread(entry.platform_data_offset, length))
            if text is None:
                continue
            out += [(f"locator {code.name}", p) for p in locators.to_host_path(text, code, child_dir)]
        name = locators.parent_name(self.header)
        if name:
            out.append(("parent name", child_dir / Path(name.replace("\\", "/")).name))
        seen: set[Path] = set()
        return [(how, p) for how, p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]

    def accept_parent(self, parent: Any, explicit: bool) -> None:
        assert self.header is not None
        problems = []
        pe = parent.engine
        if isinstance(pe, VhdEngine) and pe.footer.unique_id != self.header.parent_unique_id:
            problems.append(f"unique id {pe.footer.unique_id.hex()} is not the expected "
                            f"{self.header.parent_unique_id.hex()}")
        if round_up(parent.size, SECTOR) != self.virtual_size:
            problems.append(f"size {parent.size} differs from the child's {self.virtual_size}")
        if problems and not explicit:
            raise ParentMissingError(f"{parent.path}: " + "; ".join(problems))
        self.warnings += [f"parent {parent.path}: {p} (accepted: chosen explicitly)" for p in problems]
        if not isinstance(pe, VhdEngine):
            self.warnings.append(f"parent {parent.path} is {pe.format_name}: identity not checkable")
        # reported, never enforced: Windows-made children often store 0 here
        from .create import vhd_time

        stamp = vhd_time(parent.path.stat().st_mtime)
        if self.header.parent_timestamp != stamp:
            self.warnings.append(f"parent time stamp {self.header.parent_timestamp} differs from the "
                                 f"parent's modification time ({stamp}); not enforced")

    def set_backing(self, parent: Any, path: Path | None, check_only: bool = False) -> None:
        """Point this differencing image at another parent (qemu-img rebase): the parent's
        identity (unique id, time stamp, name) and new W2ku/W2ru/MacX locators. With
        `check_only`, only raise when it cannot be done.

        Crash order: the footer moves to the new end, the locator data goes into that fresh
        space, then the header (one sector write) switches to it; until then the old
        reference is whole. When the new locators fit into the areas the old ones held
        (now unreferenced), they are copied there and the header switches again, and the
        space at the end is given back (footer first, then truncate): no leak is left. A
        crash in that second round leaves either reference whole, with at most trailing
        space that `check -r leaks` trims. Locators that do not fit stay at the end and the
        old areas are left as leaked space (reported by check)."""
        from .create import locator_data

        self.require_writable()
        header = self.header
        if header is None or not self.differencing:
            raise UnsupportedFeatureError("giving a fixed or dynamic VHD a backing file")
        if parent is None or path is None:
            raise UnsupportedFeatureError("removing the parent of a differencing VHD "
                                          "(convert it to a dynamic image instead)")
        if parent.size != self.virtual_size:
            raise DiskspecError(f"parent {path} has {parent.size} bytes, the image {self.virtual_size}")
        if check_only:
            return
        absolute = Path(path).resolve()
        located = locator_data(absolute, self.backend.path.parent)
        old_areas = sorted((loc.platform_data_offset, reserved)
                           for loc in header.parent_locators
                           if loc.platform_code != vhd.PlatformCode.NONE
                           and (reserved := locators.reserved_bytes(loc)) is not None)
        old_end = self.data_end
        at = round_up(self.data_end, SECTOR)
        fresh = []
        for code, data in located:
            space = max(1024, round_up(len(data), SECTOR))
            fresh.append((code, data, at, space))
            at += space
        self.backend.pwrite(at, self.footer.build())  # 1. the footer at the new end
        self.barrier()
        self._switch_locators(parent, Path(path), absolute, fresh)  # 2., 3.
        self.data_end = at
        self.file_size = max(self.file_size, at + FOOTER)
        packed = _pack_locators(located, old_areas)
        if packed is None:
            return
        self._switch_locators(parent, Path(path), absolute, packed)
        self.backend.pwrite(old_end, self.footer.build())  # the end given back: footer first
        self.barrier()
        self.backend.truncate(old_end + FOOTER)
        self.data_end = old_end
        self.file_size = old_end + FOOTER

    def _switch_locators(self, parent: Any, path: Path, absolute: Path,
                         placed: Sequence[tuple[Any, bytes, int, int]]) -> None:
        """Write the locator data at its places (space no reference points at), then switch
        the header to it and to the parent's identity in one sector write."""
        from .create import vhd_time

        header = self.header
        assert header is not None
        for _, data, offset, space in placed:
            self.backend.pwrite(offset, data + bytes(space - len(data)))
        self.barrier()
        entries = [vhd.ParentLocator(code, space, len(data), 0, offset)
                   for code, data, offset, space in placed]
        empty = vhd.ParentLocator(vhd.PlatformCode.NONE, 0, 0, 0, 0)
        header.parent_locators = entries + [empty] * (len(header.parent_locators) - len(entries))
        pe = parent.engine
        header.parent_unique_id = pe.footer.unique_id if isinstance(pe, VhdEngine) else bytes(16)
        header.parent_timestamp = vhd_time(path.stat().st_mtime)
        header.parent_unicode_name = absolute.name[:256].ljust(256, "\0")
        header.update_checksum()
        self.backend.pwrite(self.footer.data_offset, header.build())  # the switch
        self.barrier()

    # -- mapping ---------------------------------------------------------------------------

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        end = min(offset + length, self.virtual_size)
        if self.disk_type == vhd.DiskType.FIXED:
            if offset < end:
                yield Extent(offset, end - offset, State.DATA, offset)
            return
        bs = self.block_size
        empty = State.BACKING if self.differencing else State.ZERO
        pos = offset
        while pos < end:
            block = pos >> self.block_shift
            stop = min(end, (block + 1) * bs)
            entry = self.bat[block]
            if entry == UNALLOCATED:  # the whole run of unallocated blocks, found in bulk
                last = self.bat.run_end(block, ((end - 1) >> self.block_shift) + 1)
                stop = min(end, last * bs)
                yield Extent(pos, stop - pos, empty)
            elif block in self.damage:
                raise self.damage_error(block)
            else:
                base = entry * SECTOR + self.bitmap_bytes - block * bs
                if self.differencing:
                    yield from self._bitmap_extents(block, pos, stop, base)
                else:
                    yield Extent(pos, stop - pos, State.DATA, base + pos)
            pos = stop

    def _bitmap_extents(self, block: int, pos: int, stop: int, base: int) -> Iterator[Extent]:
        """Runs of equal bits of a differencing block: DATA where set, BACKING where clear."""
        bitmap = self._bitmap(block)
        first = block * self.block_size
        sector = (pos - first) // SECTOR
        while pos < stop:
            bit = bitmaps.bit(bitmap, sector, MSB_FIRST)
            run_end = bitmaps.run_end(bitmap, sector, bit, ceil_div(stop - first, SECTOR), MSB_FIRST)
            nxt = min(stop, first + run_end * SECTOR)
            yield Extent(pos, nxt - pos, State.DATA, base + pos) if bit else \
                Extent(pos, nxt - pos, State.BACKING)
            pos, sector = nxt, run_end

    def _bitmap(self, block: int) -> bytearray:
        bitmap = self._bitmaps.get(block)
        if bitmap is None:
            if block in self.damage:
                raise self.damage_error(block)
            at = self.bat[block] * SECTOR
            bitmap = bytearray(self.backend.pread(at, self.bitmap_bytes))
            if len(self._bitmaps) >= BITMAP_CACHE:
                del self._bitmaps[next(iter(self._bitmaps))]
            self._bitmaps[block] = bitmap
        return bitmap

    def forget_bitmaps(self) -> None:
        """Drop the cached sector bitmaps (after blocks moved in the file)."""
        self._bitmaps.clear()

    # -- reading: one positioned read per block in the common case -------------------------

    def readinto(self, offset: int, buf: memoryview) -> None:
        if self.disk_type == vhd.DiskType.FIXED:
            self.backend.readinto(offset, buf)
            return
        if self.differencing or self.damage:  # through extents(), which name damaged blocks
            super().readinto(offset, buf)
            return
        shift = self.block_shift
        block = offset >> shift
        within = offset - (block << shift)
        n = len(buf)
        if self._fd >= 0 and within + n <= self.block_size:  # the common case: one block
            entry = self.bat[block]
            at = entry * SECTOR + self.bitmap_bytes + within
            if self.damage:  # its page may just have been read, and found damaged
                super().readinto(offset, buf)
                return
            if entry != UNALLOCATED and os.preadv(self._fd, [buf], at) == n:
                return
            # else a hole, or a short read (the block points past the end): the loop says so
        bs, bat = self.block_size, self.bat
        done, n = 0, len(buf)
        while done < n:
            pos = offset + done
            block = pos >> shift
            within = pos - (block << shift)
            take = min(n - done, bs - within)
            entry = bat[block]
            if self.damage:  # its page may just have been read, and found damaged
                super().readinto(pos, buf[done:])
                return
            part = buf[done : done + take]
            if entry == UNALLOCATED:
                fill_zero(part)
            else:
                at = entry * SECTOR + self.bitmap_bytes + within
                if at + take > self.file_size:
                    raise CorruptError(f"block {block} points past the end of the file",
                                       offset=self.header_table_offset + 4 * block, path="bat")
                self.backend.readinto(at, part)
            done += take

    def fast_reader(self, general: Callable[[int, memoryview], None]
                    ) -> Callable[[int, memoryview], None]:
        """A reader bound to this image's layout: closure variables instead of attribute
        lookups, one preadv for a read inside the disk and inside one allocated block (random
        4 KiB reads); anything else goes to `general`."""
        fd = self._fd
        if fd < 0 or self.differencing or self.damage:
            return general
        preadv, size = os.preadv, self.virtual_size
        if self.disk_type == vhd.DiskType.FIXED:
            def read_fixed(offset: int, buf: memoryview) -> None:
                n = len(buf)
                if offset + n > size or preadv(fd, [buf], offset) != n:
                    general(offset, buf)  # past the end, or a located error

            return read_fixed
        shift, block_size, skip = self.block_shift, self.block_size, self.bitmap_bytes
        # the BAT pages in memory, indexed directly; a miss (or any damage found) goes the
        # general way, which loads the page and names damaged blocks
        pages, pshift, pmask, damage = self.bat.loaded(), self.bat.shift, self.bat.per_page - 1, \
            self.damage
        zeros, zlen = ZEROS, len(ZEROS)

        def read(offset: int, buf: memoryview) -> None:
            n = len(buf)
            block = offset >> shift
            within = offset - (block << shift)
            page = pages.get(block >> pshift)
            if within + n <= block_size and offset + n <= size and page is not None and not damage:
                entry = page[block & pmask]
                if entry == UNALLOCATED:
                    if n <= zlen:
                        buf[:] = zeros[:n]
                        return
                elif preadv(fd, [buf], entry * SECTOR + skip + within) == n:
                    return
            general(offset, buf)

        return read

    def fast_pread(self, general: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
        fd = self._fd
        if fd < 0 or self.differencing or self.damage:
            return general
        pread, size = os.pread, self.virtual_size
        if self.disk_type == vhd.DiskType.FIXED:
            def pread_fixed(offset: int, length: int) -> bytes:
                if offset + length <= size:
                    data = pread(fd, length, offset)
                    if len(data) == length:
                        return data
                return general(offset, length)

            return pread_fixed
        shift, block_size, skip = self.block_shift, self.block_size, self.bitmap_bytes
        pages, pshift, pmask, damage = self.bat.loaded(), self.bat.shift, self.bat.per_page - 1, \
            self.damage

        def pread_dynamic(offset: int, length: int) -> bytes:
            block = offset >> shift
            within = offset - (block << shift)
            page = pages.get(block >> pshift)
            if within + length <= block_size and offset + length <= size and page is not None \
                    and not damage:
                entry = page[block & pmask]
                if entry != UNALLOCATED:
                    data = pread(fd, length, entry * SECTOR + skip + within)
                    if len(data) == length:
                        return data
            return general(offset, length)

        return pread_dynamic

    @property
    def header_table_offset(self) -> int:
        return self.header.table_offset if self.header is not None else 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, offset: int, data: memoryview) -> None:
        self.require_writable()
        if offset < 0 or offset + len(data) > self.virtual_size:
            raise DiskspecError(f"write at {offset} of {len(data)} bytes is outside the disk")
        if self.disk_type == vhd.DiskType.FIXED:
            self.backend.pwrite(offset, data)
            return
        pending: list[tuple[int, int, memoryview]] = []  # blocks to allocate
        bs, shift = self.block_size, self.block_shift
        done = 0
        while done < len(data):
            pos = offset + done
            block = pos >> shift
            within = pos - (block << shift)
            take = min(len(data) - done, bs - within)
            piece = data[done : done + take]
            if self.differencing and (within % SECTOR or take % SECTOR):
                within, piece = self._whole_sectors(block, within, piece)
            entry = self.bat[block]
            if self.damage:  # its page may just have been read, and found damaged
                self.require_writable()
            if entry == UNALLOCATED:
                pending.append((block, within, piece))
            else:
                self._write_allocated(block, within, piece)
            done += take
        if pending:
            self._allocate(pending)

    def _whole_sectors(self, block: int, within: int, piece: memoryview) -> tuple[int, memoryview]:
        """Widen a differencing write to whole sectors, filling the edges from the disk as it
        reads now (child sectors where present, else the parent): copy-on-write per sector."""
        start = within - within % SECTOR
        stop = round_up(within + len(piece), SECTOR)
        buf = bytearray(stop - start)
        view = memoryview(buf)
        guest = (block << self.block_shift) + start
        head_partial = within != start
        tail_partial = within + len(piece) != stop
        for edge, partial in ((0, head_partial), (len(buf) - SECTOR, tail_partial)):
            if partial:
                self._read_guest(guest + edge, view[edge : edge + SECTOR])
        view[within - start : within - start + len(piece)] = piece
        return start, view

    def _read_guest(self, offset: int, buf: memoryview) -> None:
        """Guest bytes as they read now (this image, then the parent)."""
        if self.needs_parent and self.backing is None:
            for e in self.extents(offset, len(buf)):
                if e.state is State.BACKING:
                    raise UnsupportedFeatureError(
                        "a partial-sector write to a differencing VHD opened without its parent")
        self.readinto(offset, buf)

    def _write_allocated(self, block: int, within: int, piece: memoryview) -> None:
        base = self.bat[block] * SECTOR
        if base + self.bitmap_bytes + self.block_size > max(self.file_size, self.data_end):
            raise CorruptError(f"block {block} points past the end of the file",
                               offset=self.header_table_offset + 4 * block, path="bat")
        self.backend.pwrite(base + self.bitmap_bytes + within, piece)
        # data durable first, then the bits: a crash in between leaves the old content visible
        bitmap = self._bitmap(block)
        if bitmaps.set_range(bitmap, within // SECTOR, ceil_div(within + len(piece), SECTOR), MSB_FIRST):
            self.barrier()
            self.backend.pwrite(base, bitmap)

    def _allocate(self, pending: list[tuple[int, int, memoryview]]) -> None:
        """New blocks where the footer is, in the crash-safe order of vhd.md 9.3."""
        # Each block's data starts on a 4 KiB boundary of the file (its bitmap just before):
        # page-aligned reads are markedly faster; the padding is < 4 KiB per block.
        span = round_up(self.bitmap_bytes + self.block_size, ALIGN)
        start = round_up(self.data_end + self.bitmap_bytes, ALIGN) - self.bitmap_bytes
        new_end = start + span * (len(pending) - 1) + self.bitmap_bytes + self.block_size
        if new_end // SECTOR > UNALLOCATED:
            raise UnsupportedFeatureError("a VHD file cannot grow past 2 TiB (32-bit sector numbers)")
        # 1. the footer at the new end: the file is valid (with a leaked area) from here on
        self.backend.pwrite(new_end, self.footer.build())
        self.barrier()
        # 2. bitmap and data of every new block
        spb = self.block_size // SECTOR
        for i, (block, within, piece) in enumerate(pending):
            at = start + i * span
            if self.differencing:
                bitmap = bytearray(self.bitmap_bytes)
                bitmaps.set_range(bitmap, within // SECTOR, ceil_div(within + len(piece), SECTOR),
                                  MSB_FIRST)
            else:  # dynamic: never-written sectors read as zero, so every bit may be set
                used = ceil_div(spb, 8)
                bitmap = bytearray(b"\xff" * used + bytes(self.bitmap_bytes - used))
            self.backend.pwrite(at, bitmap)
            self.backend.pwrite(at + self.bitmap_bytes + within, piece)
            self._bitmaps[block] = bitmap
        self.barrier()
        # 3. the BAT entries: only now do the blocks become part of the disk
        for i, (block, _, _) in enumerate(pending):
            self.bat[block] = (start + i * span) // SECTOR
        self.write_bat([b for b, _, _ in pending])
        self.barrier()
        self.data_end = new_end
        self.file_size = max(self.file_size, new_end + FOOTER)

    def write_bat(self, blocks: list[int]) -> None:
        """Write the BAT entries of `blocks`, coalescing neighbours into one write."""
        assert self.header is not None
        blocks = sorted(set(blocks))
        i = 0
        while i < len(blocks):
            j = i
            while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
                j += 1
            first, last = blocks[i], blocks[j]
            self.backend.pwrite(self.header.table_offset + 4 * first, self.bat.encode(first, last + 1))
            i = j + 1
        self.bat.settle()

    def write_footer(self) -> None:
        """Rewrite both footer copies (after a change of size or geometry): the one at the
        end first, which open() trusts; a crash before the copy at 0 is written leaves a
        stale copy that check reports and `check -r` rewrites."""
        self.footer.update_checksum()
        raw = self.footer.build()
        self.backend.pwrite(self.data_end, raw)
        if self.disk_type != vhd.DiskType.FIXED:
            self.barrier()
            self.backend.pwrite(0, raw)

    # -- reporting -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format_name, "virtual-size": self.virtual_size}
        if self.header is not None:
            out["cluster-size"] = self.block_size
        f = self.footer
        app = f.creator_application
        out["format-specific"] = {
            "type": "vpc",
            "data": {
                "subformat": vhd.DiskType(f.disk_type).name.lower()
                if isinstance(f.disk_type, vhd.DiskType) else int(f.disk_type),
                "creator-application": int(app).to_bytes(4, "big").decode("latin-1"),
                "creator-version": f"{f.creator_version >> 16}.{f.creator_version & 0xFFFF}",
                "current-size": f.current_size,
                "chs": [f.disk_geometry.cylinders, f.disk_geometry.heads,
                        f.disk_geometry.sectors_per_track],
                "size-rule": self.size_rule,
                # a fixed VHD has no signature at offset 0: it is recognised by its footer
                "recognised-by": "footer at the end of the file"
                if f.disk_type == vhd.DiskType.FIXED else "footer copy at offset 0",
                "unique-id": f.unique_id.hex(),
            },
        }
        if self.header is not None:  # the whole BAT, in bulk (which also finds its damage)
            out["format-specific"]["data"]["allocated-blocks"] = sum(
                1 for _ in self.bat.other_positions(UNALLOCATED))
        if self.differencing and self.header is not None:
            out["format-specific"]["data"]["parent-unique-id"] = self.header.parent_unique_id.hex()
            out["format-specific"]["data"]["parent-timestamp"] = self.header.parent_timestamp
            out["format-specific"]["data"]["parent-name"] = locators.parent_name(self.header)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def check(self, repair: bool = False) -> CheckResult:
        from .check import check

        return check(self, repair)

    def resize(self, new_size: int) -> None:
        from .resize import resize

        resize(self, new_size)

    @classmethod
    def create(cls, path: Path, size: int | None, **options: Any) -> VhdEngine:
        from .create import create

        return create(path, size, **options)


def _pack_locators(located: list[tuple[Any, bytes]], areas: list[tuple[int, int]]
                   ) -> list[tuple[Any, bytes, int, int]] | None:
    """Place the locator data, in order, into `areas` (offset, bytes) so that every area is
    used and the last locator in each extends to the area's end (no space left over): one
    per area when their numbers agree, else packed in order; the placements (code, data,
    offset, space), or None when they do not fit that way."""
    if len(located) == len(areas) and all(len(data) <= size for (_, data), (_, size)
                                          in zip(located, areas, strict=True)):
        return [(code, data, offset, size)
                for (code, data), (offset, size) in zip(located, areas, strict=True)]
    placed: list[tuple[Any, bytes, int, int]] = []
    k = 0
    for offset, size in areas:
        pos, first = offset, len(placed)
        while k < len(located) and pos + round_up(len(located[k][1]), SECTOR) <= offset + size:
            code, data = located[k]
            space = max(SECTOR, round_up(len(data), SECTOR))
            placed.append((code, data, pos, space))
            pos += space
            k += 1
        if len(placed) == first:
            return None  # an area left unused would leak
        code, data, start, _ = placed[-1]
        placed[-1] = (code, data, start, offset + size - start)
    return placed if k == len(located) else None
