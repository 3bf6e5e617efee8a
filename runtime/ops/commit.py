"""Commit: copy what a child image stores itself into its parent (qemu-img commit).

The child is read through its own extents; only DATA extents are copied, in large
positioned reads, into the parent opened read-write. The child is left as it is (it still
reads the same, now from both places), like `qemu-img commit -d`.
"""

from __future__ import annotations

import os

from ..errors import DiskspecError
from ..extent import State
from ..image import open as open_image

CHUNK = 8 << 20


def commit(path: str | os.PathLike[str], parent: str | os.PathLike[str] | None = None) -> int:
    """Copy the child's own data into its parent; returns the number of bytes copied."""
    with open_image(path, parent=parent) as child:  # finds the parent and checks it matches
        if child.backing is None:
            raise DiskspecError(f"{path} has no backing file to commit into")
        parent_path = child.backing.path
        parent_format = child.backing.format
        child_format = child.format
    # reopened without its parent: the parent cannot be opened read-write while the child's
    # read-only hold on it (qemu's image locks) is there
    copied = 0
    with open_image(path, format=child_format, backing=False) as child, \
            open_image(parent_path, "r+", format=parent_format, backing=False) as target:
        if target.size < child.size:
            raise DiskspecError(f"parent {parent_path} ({target.size} bytes) is smaller than "
                                f"{path} ({child.size} bytes); resize it first")
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for e in child.extents():
            if e.state is not State.DATA:
                continue
            pos = e.offset
            while pos < e.end:
                n = min(CHUNK, e.end - pos)
                child.engine.readinto(pos, view[:n])
                target.seek(pos)
                target.write(view[:n])
                pos += n
                copied += n
        target.flush()
    return copied


__all__ = ["commit"]
