"""A read-only view of a file with some byte ranges replaced in memory.

Used to replay a VHDX log without writing to the file: reads see the replayed pages, the
file stays untouched.
"""

from __future__ import annotations

import bisect
from pathlib import Path

from .backend import Backend
from .errors import ReadOnlyError


class OverlayBackend:
    def __init__(self, inner: Backend, pages: dict[int, bytes], size: int):
        self.inner = inner
        self.path: Path = inner.path
        self.writable = False
        self.pages = pages  # file offset -> replacement bytes (non-overlapping)
        self.starts = sorted(pages)
        self._size = max(size, inner.size())

    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf)
        real = max(0, min(end, self.inner.size()) - offset)
        if real:
            self.inner.readinto(offset, buf[:real])
        if real < len(buf):  # the replay extended the file: zeros past the real end
            buf[real:] = bytes(len(buf) - real)
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            start = self.starts[i]
            data = self.pages[start]
            lo, hi = max(start, offset), min(start + len(data), end)
            if lo < hi:
                buf[lo - offset : hi - offset] = data[lo - start : hi - start]
            i += 1

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        raise ReadOnlyError(f"{self.path} is open read-only (its log was replayed in memory)")

    def truncate(self, size: int) -> None:
        raise ReadOnlyError(f"{self.path} is open read-only")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.inner.close()
