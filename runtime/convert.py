"""Convert: copy the guest content of one or more images (concatenated) into a new image.

Sparse-aware from the sources' block status: runs that read as zeros (holes, unallocated
blocks, host-file holes under data) are never read or written, and inside data the aligned
all-zero pieces of at least `sparse_size` bytes (qemu-img's -S, default 4 KiB; 0 writes
everything) are skipped too, so the target stays sparse. Data moves in large positioned
reads into one preallocated buffer, written from there; with nothing to scan (-S 0) between
two raw files it moves with os.copy_file_range, file to file in the kernel.

Crash safety: a new target is built under a temporary name next to the destination, written
without the engine's write barriers, flushed once, and renamed over the destination only when
complete; on any failure (Ctrl-C included) the temporary file is removed, so no half-written
image is left behind and an existing destination is untouched until the new one is whole.
With `no_create` (qemu-img's -n) the existing target is written in place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DiskspecError
from .image import Image
from .image import create as create_image
from .image import open as open_image
from .mapping import MapEntry, block_status, merged
from .raw import RawEngine
from .sparse import ZeroScanner, data_runs

CHUNK = 8 << 20
DEFAULT_SPARSE = 4096
MAX_SPARSE = 16 << 20

Progress = Callable[[int, int], None]


@dataclass
class ConvertStats:
    size: int = 0  # guest bytes converted
    written: int = 0  # bytes written to the target
    skipped_zero: int = 0  # guest bytes not written because they read as zeros


def check_sparse_size(value: int) -> int:
    if value < 0 or value % 512 or value > MAX_SPARSE:
        raise DiskspecError(f"invalid sparse size {value}: a multiple of 512 from 0 to 16 MiB")
    return value


def temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.diskspec-part")


def convert(sources: Sequence[Image], target: str | os.PathLike[str], fmt: str | None,
            options: dict[str, Any] | None = None, *, sparse_size: int = DEFAULT_SPARSE,
            no_create: bool = False, target_is_zero: bool = False,
            progress: Progress | None = None, chunk: int = CHUNK, flush: bool = True
            ) -> ConvertStats:
    """Write the concatenated guest content of `sources` into `target` of format `fmt`
    (created with `options`; with `no_create` it must exist, `fmt` None probes it).
    `flush` False skips the final fsync (qemu-img's default target cache mode "unsafe")."""
    if not sources:
        raise DiskspecError("no source image")
    check_sparse_size(sparse_size)
    options = dict(options or {})
    path = Path(target)
    total = sum(s.size for s in sources)
    for s in sources:
        if path.exists() and s.path.exists() and os.path.samefile(path, s.path):
            raise DiskspecError(f"{path} is both a source and the target")
    if target_is_zero and not no_create:
        raise DiskspecError("--target-is-zero requires -n (an existing target)")
    if no_create:
        if options:
            raise DiskspecError("-o has no effect when skipping image creation")
        out = open_image(path, "r+", format=fmt)
        tmp: Path | None = None
        if out.size < total:
            out.close()
            raise DiskspecError("output file is smaller than input file")
    else:
        if fmt is None:
            fmt = "raw"
        if path.exists() and not path.is_file():
            raise DiskspecError(f"{path} exists and is not a regular file; use -n to write into it")
        tmp = temporary_name(path)
        tmp.unlink(missing_ok=True)
        try:
            out = create_image(tmp, fmt, total, **options)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    try:
        # A new target is a temporary file, deleted on failure: no barriers needed inside
        # it. An existing one (-n) keeps them unless the caller wants no flushes at all.
        out.engine.barriers = flush and tmp is None
        stats = _copy_all(sources, out, total, sparse_size, zero_target=not no_create or target_is_zero,
                          progress=progress, chunk=chunk)
        _close(out, flush)
        if tmp is not None:
            os.replace(tmp, path)
            if flush:
                _sync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(Exception):
            _close(out, False)  # no fsync of a file about to be deleted
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return stats


def _close(out: Image, flush: bool) -> None:
    """Close the target with at most one fsync: the engine writes its closing metadata
    first (without barriers), then one flush makes all of it durable."""
    if flush:
        out.engine.finish()
        out.flush()
    out.close(sync=False)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every file system can fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_all(sources: Sequence[Image], out: Image, total: int, sparse_size: int, zero_target: bool,
              progress: Progress | None, chunk: int) -> ConvertStats:
    stats = ConvertStats(size=total)
    copier = _Copier(out, sparse_size if zero_target else 0, chunk, stats)
    copier.progress, copier.total = progress, total
    base = 0
    if progress is not None:
        progress(0, total)
    for src in sources:
        for e in merged(block_status(src, host_holes="all")):
            if e.zero:
                stats.skipped_zero += e.length
                if not zero_target:
                    copier.zero(base + e.start, e.length)
            else:
                copier.copy(e, base)
            if progress is not None:
                progress(base + e.end, total)
        base += src.size
    return stats


class _Copier:
    """Moves data runs into the target through one preallocated buffer."""

    def __init__(self, out: Image, sparse_size: int, chunk: int, stats: ConvertStats):
        self.out = out
        self.sparse = sparse_size
        self.chunk = max(chunk, sparse_size, 512)
        self.buf = bytearray(self.chunk)
        self.view = memoryview(self.buf)
        self.scanner = ZeroScanner(sparse_size, self.chunk) if sparse_size else None
        self.stats = stats
        out_fd = getattr(out.engine.backend, "fd", -1)
        #: a raw target maps guest offsets 1:1 onto its file: data can go file to file
        self.out_fd = out_fd if isinstance(out.engine, RawEngine) and isinstance(out_fd, int) else -1
        self.progress: Progress | None = None
        self.total = 0

    def copy(self, e: MapEntry, base: int) -> None:
        src_fd = getattr(e.image.engine.backend, "fd", -1)
        if self.scanner is None and self.out_fd >= 0 and e.offset is not None \
                and isinstance(src_fd, int) and src_fd >= 0:
            # nothing to look at: the kernel copies file to file
            self._copy_range(src_fd, e.offset, base + e.start, e.length)
            return
        # The data has to pass through memory for the zero scan anyway, so it is read once
        # into the buffer and written from there (read + copy_file_range would read twice).
        write = self.out.engine.write
        pos = e.start
        while pos < e.end:
            n = min(self.chunk, e.end - pos)
            view = self.view[:n]
            if e.offset is not None:
                e.image.engine.backend.readinto(e.offset + pos - e.start, view)
            else:
                e.image.read_at(pos, view)
            guest = base + pos
            for a, b in self._pieces(n, guest):
                write(guest + a, view[a:b])
                self.stats.written += b - a
            pos += n
            if self.progress is not None:
                self.progress(base + pos, self.total)

    def _pieces(self, n: int, guest: int) -> list[tuple[int, int]]:
        """Runs [a, b) of the buffer's first n bytes to write: everything but the pieces of
        `sparse` bytes (aligned to the guest offset) that are all zero."""
        if self.scanner is None:
            return [(0, n)]
        zero = self.scanner.zero_runs(self.buf, n, (-guest) % self.sparse or self.sparse)
        self.stats.skipped_zero += sum(b - a for a, b in zero)
        return data_runs(zero, n)

    def _copy_range(self, src_fd: int, src: int, dst: int, length: int) -> None:
        out_fd = self.out_fd
        while length > 0:
            n = os.copy_file_range(src_fd, out_fd, length, src, dst)
            if n <= 0:  # the source file is shorter than its map says
                raise DiskspecError(f"short copy at source file offset {src}")
            src, dst, length = src + n, dst + n, length - n
            self.stats.written += n

    def zero(self, offset: int, length: int) -> None:
        """Make [offset, offset+length) of an existing target read as zeros."""
        zero_buf = memoryview(bytes(min(self.chunk, max(length, 1))))
        for e in block_status(self.out, offset, length, host_holes="all"):
            if e.zero:
                continue
            pos = e.start
            while pos < e.end:
                n = min(len(zero_buf), e.end - pos)
                self.out.engine.write(pos, zero_buf[:n])
                self.stats.written += n
                pos += n
