"""Raw images: the guest disk byte for byte (holes reported as zero where the OS says so)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...backend import FileBackend
from ...engine import Capabilities, Engine
from ...errors import DiskspecError
from ...extent import Extent, State


class RawEngine(Engine):
    format_name = "raw"
    capabilities = Capabilities(
        create=True, write=True, resize=True, commit_target=True, identity_map=True,
        create_options={"size": "Virtual disk size",
                        "preallocation": "Preallocation mode (only 'off' is supported)"})

    @classmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        return 1  # anything can be raw; chosen only when nothing else claims the file

    @classmethod
    def open(cls, path: Path, writable: bool = False, *, share: bool = False,
             **options: Any) -> RawEngine:
        engine = cls(FileBackend(path, writable, share=share, devices=True))
        engine.virtual_size = engine.backend.size()
        return engine

    @classmethod
    def create(cls, path: Path, size: int | None, **options: Any) -> RawEngine:
        if options:
            raise DiskspecError(f"raw images take no options, got {sorted(options)}")
        if size is None:
            raise DiskspecError("a size is needed")
        backend = FileBackend(path, create=True)
        backend.truncate(size)
        engine = cls(backend)
        engine.virtual_size = size
        return engine

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        end = min(offset + length, self.virtual_size)
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
        self.backend.readinto(offset, buf)

    def write(self, offset: int, data: memoryview) -> None:
        self.require_writable()
        self.backend.pwrite(offset, data)

    def resize(self, new_size: int) -> None:
        self.require_writable()
        self.backend.truncate(new_size)
        self.virtual_size = new_size
