"""Positioned file I/O for engines: one descriptor, os.pread/preadv/pwrite, no shared offset.

A backend is opened read-only unless write access is asked for; every short read is an
error (never garbage); flush() makes written data durable (fsync).
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, cast

from .errors import DiskspecError, ReadOnlyError, TruncatedError
from .locking import lock
from .policy import kind_refusal


class Backend(Protocol):
    """What engines need from the bytes under an image (one file, or split pieces)."""

    path: Path
    writable: bool

    def size(self) -> int: ...
    def pread(self, offset: int, length: int) -> bytes: ...
    def readinto(self, offset: int, buf: memoryview) -> None: ...
    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...
    def truncate(self, size: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Python's os module has no binding), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


def _datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)  # (macOS has no fdatasync)


def open_file(path: Path, flags: int, devices: bool = False) -> int:
    """os.open for a file that holds an image: a regular file (or, with `devices`, a block
    device). Opened non-blocking first, so that a FIFO is refused instead of waiting forever
    for a writer; the descriptor blocks as usual afterwards."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    try:
        why = kind_refusal(os.fstat(fd).st_mode, devices)
        if why is not None:
            raise DiskspecError(f"{path}: {why}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileBackend:
    """One regular file (or a block device, for raw images)."""

    def __init__(self, path: str | os.PathLike[str], writable: bool = False,
                 create: bool = False, *, share: bool = False, devices: bool = False):
        """`share` (read-only files only): qemu's -U, open even if another process holds
        the file (see locking). `devices`: a block device is accepted too."""
        self.path = Path(path)
        self.writable = writable or create
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        self.fd = open_file(self.path, flags, devices)
        try:
            lock(self.fd, self.path, self.writable, share)
        except BaseException:
            os.close(self.fd)
            raise
        self._size: int | None = None

    def size(self) -> int:
        if self._size is None:
            st = os.fstat(self.fd)
            # a block device's st_size is 0: its size is where its end is
            self._size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(self.fd, 0, os.SEEK_END)
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            data += self._read_rest(offset + len(data), length - len(data))
        return data

    def _read_rest(self, offset: int, length: int) -> bytes:
        parts = []
        while length:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                raise TruncatedError(f"{self.path}: file ends before {length} more bytes",
                                     offset=offset)
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def readinto(self, offset: int, buf: memoryview) -> None:
        got = os.preadv(self.fd, [buf], offset)
        while got < len(buf):
            more = os.preadv(self.fd, [buf[got:]], offset + got)
            if more == 0:
                raise TruncatedError(f"{self.path}: file ends {len(buf) - got} bytes early",
                                     offset=offset + got)
            got += more

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} is open read-only")
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n
        end = offset
        if self._size is not None and end > self._size:
            self._size = end

    def truncate(self, size: int) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} is open read-only")
        os.ftruncate(self.fd, size)
        self._size = size

    def flush(self) -> None:
        if self.writable:
            # fdatasync: the data and the metadata needed to read it back (the file's size)
            # are durable, as qemu's flushes; timestamps are not worth a journal commit
            _datasync(self.fd)

    def start_writeback(self) -> None:
        """Ask the kernel to start writing this file's dirty pages now, without waiting: a
        long copy then overlaps its disk writes, and the final flush has little left to do.
        A hint only (Linux's sync_file_range); durability is still flush()'s."""
        if self.writable and (start := _sync_file_range()) is not None:
            start(self.fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file; errors ignored

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SplitBackend:
    """Consecutive pieces of one logical file (legacy split VHD: .vhd, .v01, .v02, ...).

    Piece sizes come from the file system. Growth goes to the last piece.
    """

    def __init__(self, paths: Sequence[Path], writable: bool = False, *, share: bool = False):
        self.parts: list[FileBackend] = []
        try:
            for p in paths:
                self.parts.append(FileBackend(p, writable, share=share))
        except BaseException:
            for part in self.parts:
                part.close()
            raise
        self.path = self.parts[0].path
        self.writable = writable
        self._starts: list[int] = []
        total = 0
        for part in self.parts:
            self._starts.append(total)
            total += part.size()

    def size(self) -> int:
        return self._starts[-1] + self.parts[-1].size()

    def _pieces(self, offset: int, length: int) -> list[tuple[FileBackend, int, int, int]]:
        """(piece, offset in piece, length, offset in request) covering the range."""
        out = []
        done = 0
        last = len(self.parts) - 1
        for i, (part, start) in enumerate(zip(self.parts, self._starts, strict=True)):
            end = start + part.size() if i < last else 1 << 62
            if offset + done >= end or done == length:
                continue
            at = offset + done - start
            n = min(length - done, end - (offset + done))
            out.append((part, at, n, done))
            done += n
        return out

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, buf: memoryview) -> None:
        for part, at, n, pos in self._pieces(offset, len(buf)):
            part.readinto(at, buf[pos : pos + n])

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.path} is open read-only")
        view = memoryview(data)
        for part, at, n, pos in self._pieces(offset, len(view)):
            part.pwrite(at, view[pos : pos + n])

    def truncate(self, size: int) -> None:
        last_start = self._starts[-1]
        if size < last_start:
            raise ReadOnlyError("a split image cannot shrink below its last piece")
        self.parts[-1].truncate(size - last_start)

    def flush(self) -> None:
        for part in self.parts:
            part.flush()

    def start_writeback(self) -> None:
        for part in self.parts:
            part.start_writeback()

    def close(self) -> None:
        for part in self.parts:
            part.close()


@contextmanager
def new_file(path: Path) -> Iterator[FileBackend]:
    """A file being created: flushed and closed when the block ends, removed if it fails
    (no half-made image is ever left behind)."""
    backend = FileBackend(path, create=True)
    try:
        yield backend
        backend.flush()
    except BaseException:
        backend.close()
        path.unlink(missing_ok=True)
        raise
    backend.close()
