"""Compressed clusters (qcow2.md §5): descriptor decoding and one-cluster decompression.

A compressed cluster's bytes may run into the next compressed cluster (qemu packs them), so
the decoders stop as soon as one cluster of output exists and never require the whole
buffer to be consumed. zlib and zstd release the GIL while they work, so reader threads
decompress on all cores.
"""

from __future__ import annotations

import zlib
from types import ModuleType

from ...errors import CorruptError, UnsupportedFeatureError

DEFLATE, ZSTD = 0, 1
SECTOR = 512


class Descriptor:
    """Field split of a compressed L2 entry for one cluster size."""

    def __init__(self, cluster_bits: int):
        self.shift = 62 - (cluster_bits - 8)  # csize_shift
        self.offset_mask = (1 << self.shift) - 1
        self.sectors_mask = (1 << (cluster_bits - 8)) - 1

    def span(self, entry: int) -> tuple[int, int]:
        """(host byte offset, bytes to read at most) of a compressed entry."""
        at = entry & self.offset_mask
        sectors = ((entry >> self.shift) & self.sectors_mask) + 1
        return at, sectors * SECTOR - (at % SECTOR)


def _zstd() -> ModuleType:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd
        except ImportError:
            raise UnsupportedFeatureError(
                "zstd-compressed qcow2 clusters (needs Python 3.14's compression.zstd or the "
                "backports.zstd package)") from None
    return zstd  # type: ignore[no-any-return]


def decompress(kind: int, data: bytes, cluster_size: int, where: str) -> bytes:
    """Exactly one cluster of plain bytes from `data` (which may hold more after it)."""
    if kind == DEFLATE:
        # raw deflate; qemu writes 4 KiB windows, -15 reads those and any larger one
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data, cluster_size)
        except zlib.error as exc:
            raise CorruptError(f"{where}: compressed cluster does not inflate: {exc}") from None
    elif kind == ZSTD:
        out = _zstd_cluster(data, cluster_size, where)
    else:
        raise UnsupportedFeatureError(f"qcow2 compression type {kind}")
    if len(out) != cluster_size:
        raise CorruptError(f"{where}: compressed cluster decompresses to {len(out)} bytes, not "
                           f"{cluster_size}")
    return out


def _zstd_cluster(data: bytes, cluster_size: int, where: str) -> bytes:
    """zstd frames one after the other until a cluster is produced (as qemu's reader)."""
    zstd = _zstd()
    parts: list[bytes] = []
    got = 0
    rest = data
    while got < cluster_size and rest:
        d = zstd.ZstdDecompressor()
        try:
            piece = d.decompress(rest, cluster_size - got)
        except zstd.ZstdError as exc:
            raise CorruptError(f"{where}: compressed cluster is not valid zstd: {exc}") from None
        if not piece and not d.eof:
            break  # no progress
        parts.append(piece)
        got += len(piece)
        if got < cluster_size:
            if not d.eof:
                break
            rest = d.unused_data
    return b"".join(parts)
