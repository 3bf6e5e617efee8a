"""Convert: copy the guest content of one or more images (concatenated) into a new image.

Sparse-aware from the sources' block status: runs that read as zeros (holes, unallocated
blocks, host-file holes under data) are never read or written, and inside data the aligned
all-zero pieces of at least `sparse_size` bytes (qemu-img's -S, default 4 KiB; 0 writes
everything) are skipped too, so the target stays sparse. Data moves in large positioned
reads into one preallocated buffer, written from there; with nothing to scan (-S 0) between
two raw files it moves with os.copy_file_range, file to file in the kernel.

Crash safety: a target that does not exist yet is built under a temporary name next to it,
written without the engine's write barriers, flushed once, and renamed into place only when
complete; on any failure (Ctrl-C included) the temporary file is removed, so no half-written
image is left behind. An existing target (a file, a symlink to one, a block device) is written
in place as qemu-img writes it (its inode, owner and mode stay): the new image is made in it
(see overwrite.py) and the data copied into it. With `no_create` (qemu-img's -n) the existing
image is written in place as it is. Errors name the user's file, never the temporary one.

A new target created over a backing file (`options` with `parent`, qemu-img's -B) holds only
the source's top layer: what the source reads from its own backing is left to the target's,
which must have the same content (as qemu-img documents); zeros of the top layer are written
where the backing would otherwise show through.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DiskspecError
from ..image import Image
from ..image import create as create_image
from ..image import open as open_image
from .copier import ConvertStats, Copier, Progress
from .overwrite import Claim, create_into, must_overwrite

# The largest read (and write) of the copy. 4 MiB measured faster than 8 MiB for every
# bench case (VHD -> raw by ~15-25 ms of ~0.16 s): the buffer just read is still in cache
# when it is written, and half as much fresh memory is touched.
CHUNK = 4 << 20
DEFAULT_SPARSE = 4096
MAX_SPARSE = 16 << 20

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
    if not no_create and options.get("parent") is not None and len(sources) > 1:
        raise DiskspecError("a target with a backing file takes exactly one source image")
    if no_create:
        if options:
            raise DiskspecError("-o has no effect when skipping image creation")
        out = open_image(path, "r+", format=fmt)
        tmp: Path | None = None
        fresh_zeros = False
        if out.size < total:
            out.close()
            raise DiskspecError("output file is smaller than input file")
    elif must_overwrite(path):
        if fmt is None:
            fmt = "raw"
        tmp = None
        with Claim(path) as claim:  # in use: refused before anything is written
            create_into(claim, fmt, total, options)
        fresh_zeros = True  # a device's old bytes were overwritten with the holes' zeros
        out = open_image(path, "r+", format=fmt)
    else:
        if fmt is None:
            fmt = "raw"
        tmp = temporary_name(path)
        tmp.unlink(missing_ok=True)
        fresh_zeros = True
        try:
            with _named(tmp, path):
                out = create_image(tmp, fmt, total, **options)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    try:
        with _named(tmp, path):
            stats = _copy_into(out, sources, total, sparse_size, chunk, progress, flush,
                               no_create=no_create,
                               zero_target=(target_is_zero if no_create else fresh_zeros))
            if tmp is not None:
                os.replace(tmp, path)
                if flush:
                    _sync_directory(path.parent)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return stats


def _copy_into(out: Image, sources: Sequence[Image], total: int, sparse_size: int, chunk: int,
               progress: Progress | None, flush: bool, *, no_create: bool,
               zero_target: bool) -> ConvertStats:
    try:
        # A new target is either a temporary file, deleted on failure, or an existing file
        # being overwritten: no barriers inside it. An existing image (-n) keeps them unless
        # the caller wants no flushes at all.
        out.engine.barriers = flush and no_create
        over_backing = not no_create and out.backing is not None
        stats = ConvertStats(size=total)
        zero_target = zero_target and not over_backing
        Copier(out, sparse_size, zero_target, chunk, stats, progress, writeback=flush,
               over_backing=over_backing).run(sources)
        _close(out, flush)
    except BaseException:
        with contextlib.suppress(Exception):
            _close(out, False)  # no fsync of a file about to be deleted or already broken
        raise
    return stats


@contextlib.contextmanager
def _named(tmp: Path | None, path: Path) -> Iterator[None]:
    """Errors about the temporary file name the user's target instead."""
    try:
        yield
    except OSError as exc:
        if tmp is not None and exc.filename is not None and str(exc.filename) == str(tmp):
            exc.filename = str(path)
        raise
    except DiskspecError as exc:
        if tmp is not None and str(tmp) in str(exc):
            raise type(exc)(str(exc).replace(str(tmp), str(path))) from exc
        raise


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
