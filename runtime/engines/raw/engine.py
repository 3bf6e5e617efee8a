"""Raw images: the guest disk byte for byte (holes reported as zero where the OS says so)."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...backend import FileBackend
from ...engine import Capabilities, Engine
from ...errors import DiskspecError, UnsupportedFeatureError
from ...extent import Extent, State
from .prealloc import check_mode, grow


class RawEngine(Engine):
    format_name = "raw"
    capabilities = Capabilities(
        create=True, write=True, resize=True, commit_target=True, identity_map=True,
        create_options={"size": "Virtual disk size",
                        "preallocation": "Preallocation mode (allowed values: off, falloc, full)"})

    @classmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        return 1  # anything can be raw; chosen only when nothing else claims the file

    #: where the guest disk starts in the file (qemu's raw `offset=`); 0 but for a window
    base = 0
    windowed = False  # opened with offset=/size=

    @classmethod
    def open(cls, path: Path, writable: bool = False, *, share: bool = False,
             offset: int | str = 0, size: int | str | None = None, **options: Any) -> RawEngine:
        """`offset`/`size`: qemu's raw driver options, a raw image inside a larger file."""
        if options:
            raise DiskspecError(f"Block format 'raw' does not support the option "
                                f"'{sorted(options)[0]}'")
        backend = FileBackend(path, writable, share=share, devices=True)
        try:
            whole = backend.size()
            base, length = window(whole, offset, size)
        except BaseException:
            backend.close()
            raise
        windowed = bool(base) or length != whole
        engine = (RawWindowEngine if windowed else cls)(backend)
        engine.virtual_size = length
        engine.base, engine.windowed = base, windowed
        return engine

    @classmethod
    def create(cls, path: Path, size: int | None, **options: Any) -> RawEngine:
        mode = check_mode(str(options.pop("preallocation", "off")))
        if options:
            raise DiskspecError(f"raw images take no options, got {sorted(options)}")
        if size is None:
            raise DiskspecError("a size is needed")
        backend = FileBackend(path, create=True)
        grow(backend, 0, size, mode)
        engine = cls(backend)
        engine.virtual_size = size
        return engine

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        if self.base:
            for e in self._file_extents(offset + self.base, length):
                yield Extent(e.offset - self.base, e.length, e.state, e.offset)
            return
        yield from self._file_extents(offset, length)

    def _file_extents(self, offset: int, length: int) -> Iterator[Extent]:
        """The extents of the file from `offset` (a file offset), up to the guest disk's end."""
        end = min(offset + length, self.base + self.virtual_size)
        fd = getattr(self.backend, "fd", -1)
        pos = offset
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    yield Extent(pos, end - pos, State.DATA, pos)
                    return
                data = end
            if data > pos:
                yield Extent(pos, min(data, end) - pos, State.ZERO)
                pos = min(data, end)
                continue
            hole = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
            yield Extent(pos, hole - pos, State.DATA, pos)
            pos = hole

    def readinto(self, offset: int, buf: memoryview) -> None:
        self.backend.readinto(self.base + offset, buf)

    def write(self, offset: int, data: memoryview) -> None:
        self.require_writable()
        if self.windowed and offset + len(data) > self.virtual_size:  # never grows its file
            raise DiskspecError(f"write of {len(data)} bytes at {offset} is past the end "
                                f"of the {self.virtual_size}-byte raw window")
        self.backend.pwrite(self.base + offset, data)

    def resize(self, new_size: int, preallocation: str = "off") -> None:
        """`preallocation` (qemu's resize --preallocation) applies to the bytes added."""
        self.require_writable()
        if not self.capabilities.resize:
            raise UnsupportedFeatureError("resizing a raw image opened with offset=/size=")
        if check_mode(preallocation) != "off" and new_size < self.virtual_size:
            raise DiskspecError("Preallocation can only be used for growing images")
        assert isinstance(self.backend, FileBackend)
        grow(self.backend, self.virtual_size, new_size, preallocation)
        self.virtual_size = new_size


class RawWindowEngine(RawEngine):
    """A raw image opened with offset=/size=: guest offsets are not file offsets (no
    file-to-file copies into it), and it is not resized (its file holds more than it)."""

    capabilities = dataclasses.replace(RawEngine.capabilities, identity_map=False, resize=False)


def _count(name: str, value: int | str) -> int:
    if isinstance(value, int):
        return value
    if not value.isdigit():
        raise DiskspecError(f"Parameter '{name}' expects a non-negative number below 2^64")
    return int(value)


def window(whole: int, offset: int | str, size: int | str | None) -> tuple[int, int]:
    """(start, length) of the guest disk in a file of `whole` bytes, by qemu's raw rules."""
    start = _count("offset", offset)
    if start > whole:
        raise DiskspecError(f"Offset ({start}) cannot be greater than size of the containing "
                            f"file ({whole})")
    if size is None:
        return start, whole - start
    length = _count("size", size)
    if start + length > whole:
        raise DiskspecError(f"The sum of offset ({start}) and size ({length}) has to be smaller "
                            f"or equal to the actual size of the containing file ({whole})")
    if length % 512:
        raise DiskspecError("Specified size is not multiple of 512")
    return start, length
