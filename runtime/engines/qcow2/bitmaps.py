"""Persistent dirty bitmaps (qcow2.md §12): the bitmap directory, as info shows it."""

from __future__ import annotations

from typing import Any

from diskspec.formats import qcow2

from ...backend import Backend
from ...errors import CorruptError
from .header import Layout, check_table

MAX_DIRECTORY = 64 << 20  # QCOW2_MAX_BITMAP_DIRECTORY_SIZE


def directory(backend: Backend, layout: Layout) -> list[qcow2.BitmapDirectoryEntry]:
    ext = layout.bitmaps_ext
    if ext is None:
        return []
    path = backend.path
    size = ext.bitmap_directory_size
    if size > MAX_DIRECTORY:
        raise CorruptError(f"{path}: bitmap directory of {size} bytes (qemu's limit is 64 MiB)",
                           path="bitmaps_extension.bitmap_directory_size")
    check_table(path, backend.size(), ext.bitmap_directory_offset, size, layout.cluster_size,
                "bitmap directory", "bitmaps_extension.bitmap_directory_offset")
    raw = backend.pread(ext.bitmap_directory_offset, size)
    out = []
    at = 0
    for n in range(ext.nb_bitmaps):
        try:
            entry = qcow2.BitmapDirectoryEntry.parse(raw, at)
        except CorruptError as exc:
            raise CorruptError(f"{path}: bitmap directory entry {n}: {exc}",
                               offset=ext.bitmap_directory_offset + at, path="bitmap_directory") from None
        out.append(entry)
        at += entry.total_size
    return out


def info_entries(entries: list[qcow2.BitmapDirectoryEntry]) -> list[dict[str, Any]]:
    """As qemu's format-specific `bitmaps`."""
    out = []
    for e in entries:
        flags = (["in-use"] if e.in_use else []) + (["auto"] if e.auto else [])
        out.append({"flags": flags, "name": e.name, "granularity": 1 << e.granularity_bits})
    return out
