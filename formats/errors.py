"""The project's error hierarchy (shared by the generated codecs, the runtime and the CLI).

Every error a user can provoke with bad input is one of these; the CLI maps each kind to a
documented exit code and prints one line.
"""

from __future__ import annotations

import io


class DiskspecError(Exception):
    """Base of every error diskspec raises on purpose."""


class NotThisFormatError(DiskspecError):
    """The bytes are not an image of the format that was asked for (no magic, wrong cookie)."""


class CorruptError(DiskspecError):
    """A structure is damaged: a bad checksum, an impossible value, a table past the end."""

    def __init__(self, message: str, *, offset: int | None = None, path: str | None = None):
        self.offset = offset
        self.path = path
        where = []
        if path:
            where.append(path)
        if offset is not None:
            where.append(f"at offset {offset:#x}")
        super().__init__(f"{' '.join(where)}: {message}" if where else message)
        self.reason = message


class TruncatedError(CorruptError):
    """The data ends before the structure does."""


class ValidationError(CorruptError):
    """A field breaks a rule of its spec (`contents` or `valid`)."""


class ChecksumError(CorruptError):
    """A stored checksum does not match the computed one."""


class UnsupportedFeatureError(DiskspecError):
    """The image uses a feature diskspec does not implement; the message names it."""


class ParentMissingError(DiskspecError):
    """A differencing image's parent (backing file) cannot be found or does not match."""


class ReadOnlyError(DiskspecError, io.UnsupportedOperation):
    """A write was attempted on an image or file opened read-only. Also the
    io.UnsupportedOperation a file object raises for a write it cannot do."""


class ImageInUseError(DiskspecError):
    """Another process holds the image under qemu's image locks (a running VM, a qemu-img at
    work) in a way that conflicts with how it was to be opened."""


class BuildError(DiskspecError):
    """A record cannot be serialised (a value does not fit its field)."""
