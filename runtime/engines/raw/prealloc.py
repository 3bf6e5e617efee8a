"""Preallocation of a raw file's new bytes, in qemu's modes (its file driver's
`preallocation=off|falloc|full`): off leaves a hole, falloc reserves the blocks without writing
(posix_fallocate), full writes zeros."""

from __future__ import annotations

import os

from ...backend import FileBackend
from ...errors import DiskspecError, UnsupportedFeatureError

#: the modes qemu's raw/file driver accepts
MODES = ("off", "falloc", "full")
#: zeros written per call by `full`
CHUNK = 1 << 20


def check_mode(mode: str) -> str:
    """The mode, or qemu's errors: 'metadata' is a known mode that raw lacks; the rest are not
    modes at all."""
    if mode in MODES:
        return mode
    if mode == "metadata":
        raise UnsupportedFeatureError(f"Unsupported preallocation mode: {mode}")
    raise DiskspecError(f"invalid parameter value: preallocation={mode} "
                        f"(allowed values: {', '.join(MODES)})")


def grow(backend: FileBackend, old_size: int, new_size: int, mode: str) -> None:
    """Make the file `new_size` bytes, preallocating [old_size, new_size) as `mode` says."""
    check_mode(mode)
    if mode == "falloc" and new_size > old_size:
        # reserves the blocks and extends the file; they read as zeros
        os.posix_fallocate(backend.fd, old_size, new_size - old_size)
    elif mode == "full" and new_size > old_size:
        zeros = bytes(min(CHUNK, new_size - old_size))
        pos = old_size
        while pos < new_size:
            n = min(len(zeros), new_size - pos)
            backend.pwrite(pos, memoryview(zeros)[:n])
            pos += n
    backend.truncate(new_size)
