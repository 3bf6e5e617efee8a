"""A new image written over an existing file, as qemu-img does it: into the file itself.

qemu-img's create (and convert without -n) opens the target with O_CREAT and no O_EXCL, so
a symlink is followed, the inode stays (owner, mode and hard links are kept), the directory
need not be writable and a block device is written in place. The engines create images in
new files only, so the image is made in a staging file and its bytes are then moved into the
target: ranges the staging file holds (SEEK_DATA/SEEK_HOLE) are copied, its holes stay holes
in a regular target and are written as zeros on a device, which has no holes to read as
zeros. The staging file lives beside the target when that directory is writable (names an
engine records relative to the image, such as a VHD parent locator, then stay right) and in
the temporary directory otherwise.

The target is claimed first under qemu's write lock, so that an image in use fails before
anything is printed or written, with qemu's words.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..backend import open_file
from ..errors import DiskspecError, UnsupportedFeatureError
from ..image import create as create_image
from ..locking import lock

CHUNK = 4 << 20


def must_overwrite(path: Path) -> bool:
    """Whether `path` names something that exists (a symlink, even a dangling one, counts:
    it is followed), so that a new image goes into it rather than into a new file."""
    return os.path.lexists(path)


class Claim:
    """The existing target, open read-write under qemu's locks (until `close`)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.fd = open_file(path, os.O_RDWR | os.O_CREAT, devices=True)
        except DiskspecError as exc:
            raise DiskspecError(f"{path}: cannot write an image into it: {exc}") from None
        try:
            mode = os.fstat(self.fd).st_mode
            self.regular = stat.S_ISREG(mode)
            lock(self.fd, path, writable=True)
        except BaseException:
            os.close(self.fd)
            raise

    def size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def staging_path(target: Path) -> Iterator[Path]:
    """A name for building the image, removed afterwards: beside the target's real file when
    its directory is writable, else in the temporary directory."""
    real = target.resolve()
    directory = real.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        directory = Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".diskspec-new", dir=directory)
    os.close(fd)
    staged = Path(name)
    staged.unlink()  # the engines create their file themselves (O_EXCL)
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def create_into(claim: Claim, fmt: str, size: int, options: dict[str, Any]) -> None:
    """Make a new `fmt` image of `size` (with create `options`) in the claimed file."""
    with staging_path(claim.path) as staged:
        if "parent" in options and staged.parent != claim.path.resolve().parent:
            raise UnsupportedFeatureError(
                f"an image with a backing file over the existing {claim.path} in a directory "
                "diskspec cannot write (the backing file's relative name would be wrong)")
        create_image(staged, fmt, size, **options).close()
        transplant(staged, claim)
    if fmt == "raw" and options.get("preallocation") == "falloc" and size:
        # reserved blocks are holes to SEEK_DATA: reserve them in the target itself
        os.posix_fallocate(claim.fd, 0, size)


def transplant(staged: Path, claim: Claim) -> None:
    """Replace the claimed file's content by the staging file's, then make it durable."""
    src = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
    try:
        length = os.fstat(src).st_size
        if claim.regular:
            os.ftruncate(claim.fd, 0)  # as qemu: the old content goes
        elif claim.size() < length:
            raise DiskspecError(f"{claim.path}: the device is smaller than the image "
                                f"({claim.size()} < {length} bytes)")
        pos = 0
        for start, end in _data_ranges(src, length):
            if not claim.regular:
                _write_zeros(claim.fd, pos, start)
            _copy(src, claim.fd, start, end)
            pos = end
        if claim.regular:
            os.ftruncate(claim.fd, length)
        else:
            _write_zeros(claim.fd, pos, length)
        os.fsync(claim.fd)
    finally:
        os.close(src)


def _data_ranges(fd: int, length: int) -> Iterator[tuple[int, int]]:
    """The ranges of the file that hold data (all of it where SEEK_DATA is not known)."""
    pos = 0
    while pos < length:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            yield pos, length  # no SEEK_DATA here: all of it
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), length)
        yield start, end
        pos = end


def _copy(src: int, dst: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        data = os.pread(src, n, pos)
        if not data:
            raise DiskspecError("the staging image ended early")
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, pos)
            view = view[written:]
            pos += written


def _write_zeros(fd: int, start: int, end: int) -> None:
    zeros = bytes(min(CHUNK, max(0, end - start)))
    pos = start
    while pos < end:
        n = min(len(zeros), end - pos)
        pos += os.pwrite(fd, memoryview(zeros)[:n], pos)
