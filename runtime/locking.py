"""Image locks that QEMU honours, so that diskspec and a running VM never write one image at once.

QEMU locks images with open file description (OFD) locks on single bytes of the file
(advisory: the data is never touched). Byte 100 + i means "I hold permission i", byte
200 + i "I do not let others hold permission i"; both are shared (read) locks, so a
conflict shows as a test for an exclusive lock failing. Permissions, by bit: 0 consistent
read, 1 write, 2 write unchanged, 3 resize. What qemu-img and qemu-io 7.2 take (seen in
/proc/locks):
- read-only:          hold 100;           refuse others 201 (write), 203 (resize)
- read-write:         hold 100, 101, 103; refuse others 201, 203
- read-only with -U:  hold 100;           refuse nothing
Locks are applied first and checked after, so that of two processes opening at once at least
one sees the other. Where OFD locks do not exist (not Linux) or the file system refuses them,
images are opened without locks.
"""

from __future__ import annotations

import errno
import os
import struct

from .errors import ImageInUseError

try:
    import fcntl

    _SETLK, _GETLK = fcntl.F_OFD_SETLK, fcntl.F_OFD_GETLK
    _SHARED, _EXCLUSIVE, _UNLOCKED = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK
    HAVE_LOCKS = True
except (ImportError, AttributeError):  # no fcntl, or no OFD locks (not Linux)
    HAVE_LOCKS = False

PERM_BASE = 100
SHARED_BASE = 200
PERMS = ("consistent read", "write", "write unchanged", "resize")
CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE = range(len(PERMS))

#: struct flock on Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t)
_FLOCK = struct.Struct("hhxxxxqqi4x")
#: errors of a file system (or kernel) without OFD locks: the image is used unlocked
_NO_LOCKS = {errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


def _fcntl(fd: int, cmd: int, kind: int, byte: int) -> int:
    """One fcntl on one byte; returns the l_type the kernel answers with."""
    answer = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))
    return int(_FLOCK.unpack(answer)[0])


def lock(fd: int, path: object, writable: bool, share: bool = False) -> None:
    """Take qemu's locks for opening the image on `fd` (read-write when `writable`; `share`
    is qemu's -U: read-only, letting others hold every permission). Raises ImageInUseError
    when another process holds what we need or refuses what we hold; the locks live as
    long as the descriptor."""
    if not HAVE_LOCKS:
        return
    held = [CONSISTENT_READ, WRITE, RESIZE] if writable else [CONSISTENT_READ]
    refused = [] if share else [WRITE, RESIZE]
    try:
        for byte in [PERM_BASE + i for i in held] + [SHARED_BASE + i for i in refused]:
            _fcntl(fd, _SETLK, _SHARED, byte)
        for i in held:  # does anyone refuse a permission we hold?
            if _fcntl(fd, _GETLK, _EXCLUSIVE, SHARED_BASE + i) != _UNLOCKED:
                raise ImageInUseError(f'Failed to get "{PERMS[i]}" lock: is another process '
                                      f"(a running VM?) using the image '{path}'?")
        for i in refused:  # does anyone hold a permission we refuse?
            if _fcntl(fd, _GETLK, _EXCLUSIVE, PERM_BASE + i) != _UNLOCKED:
                raise ImageInUseError(f'Failed to get shared "{PERMS[i]}" lock: is another '
                                      f"process (a running VM?) using the image '{path}'?"
                                      + ("" if writable else " (-U reads it anyway)"))
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
