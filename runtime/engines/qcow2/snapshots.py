"""Internal snapshots (qcow2.md §11): the snapshot table, read entry by entry within qemu's
limits, and the lookup of `-l ID` / `snapshot.name=`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diskspec.formats import qcow2

from ...backend import Backend
from ...engine import Snapshot
from ...errors import CorruptError, DiskspecError
from .header import MAX_L1_BYTES, Layout, check_table

MAX_EXTRA_DATA = 1024  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_TABLE_BYTES = 64 << 20  # QCOW_MAX_SNAPSHOTS_SIZE
FIXED = 40


@dataclass(frozen=True)
class Entry:
    """A snapshot table entry, checked: where its L1 table is, and what it recorded."""

    snapshot: Snapshot
    l1_table_offset: int
    l1_size: int
    offset: int  # of the entry in the file


def read_table(backend: Backend, layout: Layout) -> list[Entry]:
    h = layout.header
    path = backend.path
    size = backend.size()
    out: list[Entry] = []
    at = h.snapshots_offset
    for n in range(h.nb_snapshots):
        if at - h.snapshots_offset > MAX_TABLE_BYTES:
            raise CorruptError(f"{path}: the snapshot table is larger than qemu's 64 MiB limit",
                               offset=at, path="snapshot_table")
        fixed = backend.pread(at, FIXED) if at + FIXED <= size else b""
        if len(fixed) < FIXED:
            raise CorruptError(f"{path}: snapshot table entry {n} runs past the end of the file",
                               offset=at, path="snapshot_table")
        extra = int.from_bytes(fixed[36:40], "big")
        id_len = int.from_bytes(fixed[12:14], "big")
        name_len = int.from_bytes(fixed[14:16], "big")
        if extra > MAX_EXTRA_DATA:
            raise CorruptError(f"{path}: snapshot table entry {n} has {extra} bytes of extra data "
                               f"(qemu's limit is {MAX_EXTRA_DATA})", offset=at + 36,
                               path="snapshot_entry.extra_data_size")
        used = FIXED + extra + id_len + name_len
        total = -(-used // 8) * 8
        if at + used > size:  # (the last entry's padding may be missing: qemu writes none)
            raise CorruptError(f"{path}: snapshot table entry {n} runs past the end of the file",
                               offset=at, path="snapshot_table")
        raw = backend.pread(at, min(total, size - at))
        try:
            e = qcow2.SnapshotEntry.parse(raw.ljust(total, b"\0"))
        except CorruptError as exc:
            raise CorruptError(f"{path}: snapshot table entry {n}: {exc}", offset=at,
                               path="snapshot_entry") from None
        if e.l1_size > MAX_L1_BYTES // 8:
            raise CorruptError(f"{path}: snapshot {e.id_str!r}: L1 table too large "
                               f"({e.l1_size} entries)", offset=at + 8, path="snapshot_entry.l1_size")
        check_table(path, size, e.l1_table_offset, e.l1_size * 8, layout.cluster_size,
                    f"L1 table of snapshot {e.id_str!r}", "snapshot_entry.l1_table_offset")
        x = e.extra_data
        disk_size = x.disk_size if x.disk_size is not None else h.virtual_size
        icount = x.icount if x.icount is not None and x.icount != -1 else None
        vm_state = x.vm_state_size_large if x.vm_state_size_large is not None else e.vm_state_size
        snap = Snapshot(id=e.id_str, name=e.name, disk_size=disk_size, vm_state_size=vm_state,
                        date_sec=e.date_sec, date_nsec=e.date_nsec, vm_clock_nsec=e.vm_clock_nsec,
                        icount=icount)
        out.append(Entry(snap, e.l1_table_offset, e.l1_size, at))
        at += total
    return out


def find(entries: list[Entry], wanted: str, path: object) -> Entry:
    """The snapshot with ID `wanted`, else the one with that name (qemu's order)."""
    for e in entries:
        if e.snapshot.id == wanted:
            return e
    for e in entries:
        if e.snapshot.name == wanted:
            return e
    known = ", ".join(f"{e.snapshot.id} ({e.snapshot.name})" for e in entries) or "none"
    raise DiskspecError(f"{path}: no snapshot {wanted!r} (snapshots: {known})")


def info_entry(s: Snapshot) -> dict[str, Any]:
    """One snapshot as qemu-img info's JSON shows it."""
    out: dict[str, Any] = {"id": s.id, "name": s.name, "vm-state-size": s.vm_state_size,
                           "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                           "vm-clock-sec": s.vm_clock_nsec // 1_000_000_000,
                           "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000}
    if s.icount is not None:
        out["icount"] = s.icount
    return out
