"""The qcow2 engine, read side: open (header.py), map (mapping.py), read (normal, zero,
compressed clusters, subclusters), backing files and an external data file under the
backing policy, internal snapshots opened as images of their own.

Writing comes later: a read-write open is refused (UnsupportedFeatureError), and writes to
a read-only image raise ReadOnlyError like every engine's.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...backend import Backend, FileBackend
from ...engine import Capabilities, Engine, Snapshot
from ...errors import CorruptError, DiskspecError, ParentMissingError, UnsupportedFeatureError
from ...extent import Extent, State
from ...pages import PagedTable
from ...policy import DEFAULT, Policy, referenced_file
from ...util import fill_zero
from . import bitmaps, compressed, snapshots
from .header import MAGIC, Layout, read_layout
from .mapping import (
    COMPRESSED,
    COMPRESSED_BIT,
    L1_OFFSET_MASK,
    L2_OFFSET_MASK,
    NORMAL,
    UNALLOCATED,
    UNALLOCATED_ALLOC,
    ZERO_ALLOC,
    ZERO_BIT,
    ZERO_PLAIN,
    Geometry,
    Run,
    extended_runs,
    standard_runs,
)

#: decompressed clusters kept (random reads inside one compressed cluster)
COMPRESSED_CACHE = 8
#: kinds whose run has a host offset that follows the guest offset
_PLACED = (NORMAL, ZERO_ALLOC, UNALLOCATED_ALLOC)


class Qcow2Engine(Engine):
    format_name = "qcow2"
    capabilities = Capabilities(backing=True, snapshots=True)

    def __init__(self, backend: Backend):
        super().__init__(backend)
        self.layout: Layout | None = None
        self.l1 = PagedTable(backend, 0, 0, 8, True, self.table_cache, name="L1")
        self.geo = Geometry(16, False, 3, False, str(backend.path))
        self.data: Backend | None = None  # the external data file, once opened
        self.snapshot: Snapshot | None = None  # the snapshot this engine shows, if any
        self.share = False
        self._snapshots: list[snapshots.Entry] | None = None
        self._clusters: dict[int, bytes] = {}
        self._recurse: bool | None = None

    # -- open ------------------------------------------------------------------------------

    @classmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        return 100 if head[:4] == MAGIC else 0

    @classmethod
    def open(cls, path: Path, writable: bool = False, *, share: bool = False,
             **options: Any) -> Qcow2Engine:
        if writable:
            raise UnsupportedFeatureError(f"{path}: writing qcow2 images (open it read-only)")
        snapshot = options.pop("snapshot", None)
        data_file = options.pop("data_file", None)
        if options:
            raise DiskspecError(f"unknown qcow2 option(s): {', '.join(sorted(options))}")
        backend = FileBackend(path, False, share=share)
        engine = cls(backend)
        engine.share = share
        try:
            engine._open(None if snapshot is None else str(snapshot))
            if data_file is not None:  # named by the caller: any file it likes
                engine._attach_data_file(Path(data_file))
        except BaseException:
            engine.close()
            raise
        return engine

    def _open(self, snapshot: str | None) -> None:
        layout = self.layout = read_layout(self.backend)
        h = layout.header
        self.warnings += layout.warnings
        self.virtual_size = h.virtual_size
        self.backing_format = layout.backing_format
        l1_offset, l1_size = h.l1_table_offset, h.l1_size
        if snapshot is not None:
            entry = snapshots.find(self.snapshot_entries(), snapshot, self.backend.path)
            self.snapshot = entry.snapshot
            self.virtual_size = entry.snapshot.disk_size
            l1_offset, l1_size = entry.l1_table_offset, entry.l1_size
        self.geo = Geometry(layout.cluster_bits, layout.extended_l2, layout.version,
                            layout.has_data_file, str(self.backend.path))
        # read a page at a time as entries are needed: open reads none of it
        self.l1 = PagedTable(self.backend, l1_offset, l1_size, 8, True, self.table_cache, name="L1")
        self.l1_shift = layout.cluster_bits + (layout.l2_entries.bit_length() - 1)

    def resolve_files(self, policy: Policy = DEFAULT) -> None:
        """Open the external data file the image names, under the backing policy."""
        layout = self.layout
        if layout is None or not layout.has_data_file or self.data is not None:
            return
        if layout.data_file_name is None:
            raise ParentMissingError(f"{self.backend.path}: the image has an external data file "
                                     "but does not name it (pass data_file=...)")
        self._attach_data_file(referenced_file(self.backend.path, layout.data_file_name, policy,
                                               "external data file"))

    def _attach_data_file(self, path: Path) -> None:
        if self.layout is None or not self.layout.has_data_file:
            raise DiskspecError(f"{self.backend.path} has no external data file")
        if self.data is not None:
            self.data.close()
        self.data = FileBackend(path, False, share=self.share)

    @property
    def data_backend(self) -> Backend:
        if self.layout is not None and self.layout.has_data_file:
            if self.data is None:
                raise ParentMissingError(f"{self.backend.path}: its external data file is not open")
            return self.data
        return self.backend

    def close(self) -> None:
        try:
            if self.data is not None:
                self.data.close()
        finally:
            super().close()

    # -- the backing file ------------------------------------------------------------------

    @property
    def needs_parent(self) -> bool:
        return self.layout is not None and self.layout.backing_name is not None

    def parent_candidates(self) -> list[tuple[str, Path]]:
        name = self.layout.backing_name if self.layout is not None else None
        if not name:
            return []
        path = Path(name)
        return [("backing file name", path if path.is_absolute() else self.backend.path.parent / path)]

    def accept_parent(self, parent: Any, explicit: bool) -> None:
        return  # qcow2 records no identity of its backing file

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_entries(self) -> list[snapshots.Entry]:
        if self._snapshots is None:
            assert self.layout is not None
            self._snapshots = snapshots.read_table(self.backend, self.layout)
        return self._snapshots

    def snapshots(self) -> list[Snapshot]:
        return [e.snapshot for e in self.snapshot_entries()]

    # -- mapping ---------------------------------------------------------------------------

    def _l2(self, offset: int, l1_index: int) -> array[int]:
        return self.table_cache.fetch(self, offset, lambda: self._load_l2(offset, l1_index))

    def _load_l2(self, offset: int, l1_index: int) -> array[int]:
        c = self.geo.cluster_size
        backend = self.backend
        if offset % c or offset + c > backend.size():
            raise CorruptError(f"{backend.path}: the L2 table of L1 entry {l1_index} at {offset:#x} "
                               f"is {'not cluster aligned' if offset % c else 'past the end of the file'}",
                               offset=self.l1.offset + 8 * l1_index, path="l1_entry")
        table = array("Q", backend.pread(offset, c))
        if sys.byteorder == "little":
            table.byteswap()
        return table

    def runs(self, offset: int, end: int) -> Iterator[Run]:
        """The runs of [offset, end) as the tables have them (one per L2 table at most)."""
        geo, l1 = self.geo, self.l1
        shift = self.l1_shift
        span = 1 << shift
        classify = extended_runs if geo.extended else standard_runs
        pos = offset
        while pos < end:
            l1i = pos >> shift
            if l1i >= l1.count:
                yield pos, end, UNALLOCATED, 0
                return
            entry = l1[l1i]
            l2_offset = entry & L1_OFFSET_MASK
            if not l2_offset:
                last = ((end - 1) >> shift) + 1
                j = l1.run_end(l1i, min(last, l1.count))
                stop = end if j >= l1.count else min(end, j << shift)
                yield pos, stop, UNALLOCATED, 0
                pos = stop
                continue
            l2 = self._l2(l2_offset, l1i)
            base = l1i << shift
            stop = min(end, base + span)
            c_bits = geo.cluster_bits
            lo = (pos - base) >> c_bits
            hi = -(-(stop - base) >> c_bits)
            for s, t, kind, host in classify(geo, l2, l2_offset, lo, hi, base):
                if s < pos:
                    if kind in _PLACED:
                        host += pos - s
                    s = pos
                yield s, min(t, stop), kind, host
            pos = stop

    def merged_runs(self, offset: int, end: int) -> Iterator[Run]:
        """runs(), neighbours of one kind (and, for kinds with an offset, contiguous in the
        file) joined; compressed clusters stay one run each."""
        cur: list[int] | None = None
        for s, t, kind, host in self.runs(offset, end):
            if cur is not None and kind == cur[2] and kind != COMPRESSED and (
                    kind not in _PLACED or host == cur[3] + (cur[1] - cur[0])):
                cur[1] = t
                continue
            if cur is not None:
                yield cur[0], cur[1], cur[2], cur[3]
            cur = [s, t, kind, host]
        if cur is not None:
            yield cur[0], cur[1], cur[2], cur[3]

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        end = min(offset + length, self.virtual_size)
        pending: Extent | None = None
        for s, t, kind, host in self.merged_runs(offset, end):
            if kind == NORMAL:
                e = Extent(s, t - s, State.DATA, host)
            elif kind == COMPRESSED:  # stored, but not plainly: only the engine reads it
                if pending is not None and pending.state is State.DATA and pending.file_offset is None:
                    pending = Extent(pending.offset, t - pending.offset, State.DATA)
                    continue
                e = Extent(s, t - s, State.DATA)
            elif kind == ZERO_PLAIN:
                e = Extent(s, t - s, State.ZERO)
            elif kind == ZERO_ALLOC:
                e = Extent(s, t - s, State.ZERO, host)
            elif kind == UNALLOCATED_ALLOC:
                e = Extent(s, t - s, State.BACKING, host)
            else:
                e = Extent(s, t - s, State.BACKING)
            if pending is not None:
                yield pending
            pending = e
        if pending is not None:
            yield pending

    def map_recurse(self) -> bool | None:
        """qemu looks into the file's holes under data clusters only in images it finds
        metadata-preallocated (qcow2_detect_metadata_preallocation)."""
        if self._recurse is None:
            from .refcounts import metadata_preallocated

            self._recurse = metadata_preallocated(self)
        return self._recurse

    # -- reading ---------------------------------------------------------------------------

    def readinto(self, offset: int, buf: memoryview) -> None:
        data = self.data_backend
        backing = self.backing
        for s, t, kind, host in self.merged_runs(offset, offset + len(buf)):
            part = buf[s - offset : t - offset]
            if kind == NORMAL:
                try:
                    data.readinto(host, part)
                except CorruptError as exc:
                    raise CorruptError(f"guest offset {s:#x}: data cluster at {host:#x}: {exc}",
                                       offset=host, path="l2_entry") from None
            elif kind == COMPRESSED:
                plain = self._cluster(host)
                within = s & (self.geo.cluster_size - 1)
                part[:] = plain[within : within + len(part)]
            elif kind in (UNALLOCATED, UNALLOCATED_ALLOC) and backing is not None:
                backing.read_at(s, part)
            else:
                fill_zero(part)

    def _cluster(self, entry: int) -> bytes:
        """The plain bytes of the compressed cluster an L2 entry describes (cached)."""
        got = self._clusters.get(entry)
        if got is not None:
            return got
        assert self.layout is not None
        at, length = compressed.Descriptor(self.geo.cluster_bits).span(entry)
        size = self.backend.size()
        where = f"{self.backend.path}: compressed cluster at {at:#x}"
        if at >= size:
            raise CorruptError(f"{where} is past the end of the file ({size} bytes)", offset=at,
                               path="compressed_cluster_descriptor")
        raw = self.backend.pread(at, min(length, size - at))
        plain = compressed.decompress(self.layout.compression, raw, self.geo.cluster_size, where)
        if len(self._clusters) >= COMPRESSED_CACHE:
            del self._clusters[next(iter(self._clusters))]
        self._clusters[entry] = plain
        return plain

    def fast_reader(self, general: Callable[[int, memoryview], None]
                    ) -> Callable[[int, memoryview], None]:
        fd = getattr(self.backend, "fd", -1)
        if fd < 0 or self.geo.extended or self.geo.data_file:
            return general
        l1, l1_shift = self.l1, self.l1_shift
        pages, pshift, pmask = l1.loaded(), l1.shift, l1.per_page - 1
        count, size = l1.count, self.virtual_size
        c_bits = self.geo.cluster_bits
        c = 1 << c_bits
        cmask, l2mask = c - 1, (1 << (l1_shift - c_bits)) - 1
        l2 = self._l2
        special = COMPRESSED_BIT | ZERO_BIT
        preadv = os.preadv

        def read(offset: int, buf: memoryview) -> None:
            n = len(buf)
            within = offset & cmask
            if within + n <= c and offset + n <= size:
                l1i = offset >> l1_shift
                if l1i < count:
                    page = pages.get(l1i >> pshift)
                    l2_offset = (l1[l1i] if page is None else page[l1i & pmask]) & L1_OFFSET_MASK
                    if l2_offset and not l2_offset & cmask:
                        e = l2(l2_offset, l1i)[(offset >> c_bits) & l2mask]
                        host = e & L2_OFFSET_MASK
                        if host and not e & special and not host & cmask:
                            try:
                                if preadv(fd, [buf], host + within) == n:
                                    return
                            except OverflowError:
                                pass
            general(offset, buf)

        return read

    # -- reporting -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        layout = self.layout
        assert layout is not None
        v3 = layout.version >= 3
        data: dict[str, Any] = {"compat": "1.1" if v3 else "0.10",
                                "compression-type": "zstd" if layout.compression else "zlib"}
        if v3:
            data["lazy-refcounts"] = layout.lazy_refcounts
        found = bitmaps.info_entries(bitmaps.directory(self.backend, layout))
        if found:
            data["bitmaps"] = found
        data["refcount-bits"] = 1 << layout.refcount_order
        if v3:
            if layout.has_data_file:
                if layout.data_file_name is not None:
                    data["data-file"] = layout.data_file_name
                data["data-file-raw"] = layout.data_file_raw
            data["corrupt"] = layout.corrupt
            data["extended-l2"] = layout.extended_l2
        out: dict[str, Any] = {"format": self.format_name, "virtual-size": self.virtual_size,
                               "cluster-size": layout.cluster_size, "dirty-flag": layout.dirty}
        snaps = self.snapshots()
        if snaps:
            out["snapshots"] = [snapshots.info_entry(s) for s in snaps]
        out["format-specific"] = {"type": "qcow2", "data": data}
        if layout.unknown_extensions:
            out["unknown-header-extensions"] = [
                {"type": t, "offset": at, "length": n} for t, at, n in layout.unknown_extensions]
        if self.snapshot is not None:
            out["snapshot"] = {"id": self.snapshot.id, "name": self.snapshot.name}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out
