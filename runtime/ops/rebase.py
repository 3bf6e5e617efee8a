"""Rebase: point an image at a different backing file (qemu-img rebase).

Safe mode (the default) first copies into the image every range it leaves to its backing
file where the old and the new backing file read differently, so the guest content is
unchanged; then it rewrites the image's reference to its backing file. Unsafe mode (-u)
only rewrites the reference. A crash between the two steps leaves the image over its old
backing file, reading as before (the copied ranges hold what the old backing file held).

Rewriting the reference is the engine's job: an engine that can do it has
`set_backing(parent, path, check_only=False)` (parent: the new backing Image, or None to drop
the backing file; path: its location as the user gave it, already resolved against the
image's directory; check_only: only raise if it cannot be done). It is asked with
check_only first, so formats (or cases) it cannot handle fail before anything is written;
formats without it raise UnsupportedFeatureError, also before any write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DiskspecError, UnsupportedFeatureError
from ..extent import State
from ..image import Image
from ..image import open as open_image

CHUNK = 4 << 20
GRAIN = 64 << 10  # compare and copy in pieces of this size


def resolve_backing(child: Path, backing: str) -> Path:
    """A backing file name as qemu-img reads it: relative names are relative to the image."""
    p = Path(backing)
    return p if p.is_absolute() else child.parent / p


def rebase(path: str | os.PathLike[str], backing: str | None, *, fmt: str | None = None,
           backing_format: str | None = None, unsafe: bool = False,
           progress: Callable[[int, int], None] | None = None, share: bool = False) -> int:
    """Rebase `path` onto `backing` (None or "": no backing file). Returns bytes copied.
    `share`: open the new backing file even while another process holds it (-U)."""
    child = open_image(path, "r+", format=fmt, backing=not unsafe)
    new: Image | None = None
    try:
        engine = child.engine
        if not engine.capabilities.rebase:
            raise UnsupportedFeatureError(f"changing the backing file of {engine.format_name} images")
        new_path = resolve_backing(child.path, backing) if backing else None
        if new_path is not None:
            new = open_image(new_path, format=backing_format, share=share)
        engine.set_backing(new, new_path, check_only=True)
        copied = 0 if unsafe else _copy_differences(child, new, progress)
        engine.set_backing(new, new_path)
        child.flush()
        return copied
    finally:
        if new is not None:
            new.close()
        child.close()


def _copy_differences(child: Image, new: Image | None,
                      progress: Callable[[int, int], None] | None) -> int:
    """Write into `child` what its old backing file holds where the new one differs."""
    old = child.backing
    if child.engine.needs_parent and old is None:
        raise DiskspecError(f"{child.path}: the old backing file is not open; use -u")
    runs = [(e.offset, e.end) for e in child.extents() if e.state is State.BACKING]
    total = sum(end - start for start, end in runs)
    a, b = bytearray(CHUNK), bytearray(CHUNK)
    va, vb = memoryview(a), memoryview(b)
    done = copied = 0
    for start, end in runs:
        pos = start
        while pos < end:
            n = min(CHUNK, end - pos)
            _read(old, pos, va[:n])
            _read(new, pos, vb[:n])
            if not a.startswith(vb[:n]):
                for i in range(0, n, GRAIN):
                    j = min(n, i + GRAIN)
                    if not a.startswith(vb[i:j], i):
                        child.engine.write(pos + i, va[i:j])
                        copied += j - i
            pos += n
            done += n
            if progress is not None:
                progress(done, total)
    return copied


def _read(image: Image | None, offset: int, view: memoryview) -> None:
    if image is None:
        view[:] = bytes(len(view))
    else:
        image.read_at(offset, view)  # zeros past the end of a smaller image
