"""Image locks: diskspec and QEMU see each other's, both ways.

The oracle is QEMU itself: qemu-io holds an image open (read-write, or read-only with -r)
while diskspec tries to open it, and qemu-img tries to open images diskspec holds. What each
side holds is read from /proc/locks, not from diskspec's own code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.errors import DiskspecError, ImageInUseError

from .conftest import run
from .test_cli import ds_run, one_error_line

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OFD locks are Linux's")

MiB = 1 << 20


def locked_bytes(path: Path) -> list[tuple[int, int]]:
    """(first, last) byte of every OFD lock on the file, from /proc/locks."""
    dev_ino = f":{os.stat(path).st_ino} "
    out = []
    for line in Path("/proc/locks").read_text().splitlines():
        if "OFDLCK" in line and dev_ino in line:
            first, last = line.split()[-2:]
            out.append((int(first), int(last)))
    return sorted(out)


@contextmanager
def qemu_holds(qemu_io: str, path: Path, fmt: str, *, read_only: bool = False) -> Iterator[None]:
    """qemu-io with the image open, until the block ends."""
    before = len(locked_bytes(path))
    proc = subprocess.Popen([qemu_io, *(["-r"] if read_only else []), "-f", fmt, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(locked_bytes(path)) <= before:  # wait until qemu has taken its locks
            assert proc.poll() is None and time.monotonic() < deadline, "qemu-io did not open"
            time.sleep(0.02)
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=20)


@pytest.fixture
def image(tmp_path: Path, qemu_img: str) -> Path:
    path = tmp_path / "disk.vhdx"
    run(qemu_img, "create", "-q", "-f", "vhdx", str(path), "8M")
    return path


def test_an_image_qemu_writes_is_not_opened_unless_shared(image: Path, qemu_io: str,
                                                          tmp_path: Path) -> None:
    with qemu_holds(qemu_io, image, "vhdx"):
        with pytest.raises(ImageInUseError, match='Failed to get shared "write" lock'):
            ds.open(image)
        with pytest.raises(ImageInUseError, match='Failed to get "write" lock'):
            ds.open(image, "r+")
        with pytest.raises(DiskspecError, match="read-only"):
            ds.open(image, "r+", share=True)
        with ds.open(image, share=True) as shared:  # -U: reads while qemu writes
            assert shared.size == 8 * MiB
        code, _, errs = ds_run("info", image)
        assert code == 1 and "-U reads it anyway" in one_error_line(errs)
        assert ds_run("info", "-U", image)[0] == 0
        assert ds_run("check", "-r", "all", image)[0] == 1
        code, _, errs = ds_run("convert", "-O", "raw", image, tmp_path / "out.raw")
        assert code == 1 and "lock" in one_error_line(errs)
        assert ds_run("convert", "-U", "-O", "raw", image, tmp_path / "out.raw")[0] == 0
        assert ds_run("resize", image, "+1M")[0] == 1
    # qemu is gone: everything opens again, and nothing is left locked
    assert ds_run("check", "-r", "all", image)[0] == 0
    assert locked_bytes(image) == []


def test_readers_share_and_exclude_writers(image: Path, qemu_io: str) -> None:
    with qemu_holds(qemu_io, image, "vhdx", read_only=True):
        with ds.open(image) as reader:
            assert reader.size == 8 * MiB
        with pytest.raises(ImageInUseError, match='Failed to get "write" lock'):
            ds.open(image, "r+")


def test_qemu_sees_diskspecs_locks(image: Path, qemu_img: str, qemu_io: str) -> None:
    def qemu_info(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([qemu_img, "info", *flags, str(image)], capture_output=True,
                              text=True, check=False)

    with ds.open(image, "r+"):
        assert locked_bytes(image) == [(100, 101), (103, 103), (201, 201), (203, 203)]
        done = qemu_info()
        assert done.returncode == 1 and 'Failed to get shared "write" lock' in done.stderr
        assert qemu_info("-U").returncode == 0
    with ds.open(image):  # a reader: qemu may read too, but not write
        assert locked_bytes(image) == [(100, 100), (201, 201), (203, 203)]
        assert qemu_info().returncode == 0
        done = subprocess.run([qemu_io, "-f", "vhdx", "-c", "write 0 512", str(image)],
                              capture_output=True, text=True, check=False)
        assert done.returncode != 0 and 'Failed to get "write" lock' in done.stderr
    with ds.open(image, share=True):
        assert locked_bytes(image) == [(100, 100)]
    assert locked_bytes(image) == [] and qemu_info().returncode == 0


def test_a_running_chain_keeps_its_parent_read_only(tmp_path: Path, qemu_img: str,
                                                    qemu_io: str) -> None:
    """qemu holds the backing file of the image it writes read-only: diskspec may read it but
    not write it. (A qcow2 child: qemu cannot create VHD or VHDX differencing images.)"""
    parent, child = tmp_path / "parent.vhd", tmp_path / "child.qcow2"
    run(qemu_img, "create", "-q", "-f", "vpc", str(parent), "8M")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", str(parent), "-F", "vpc", str(child))
    with qemu_holds(qemu_io, child, "qcow2"):
        deadline = time.monotonic() + 20  # qemu may lock the child before it opens the parent
        while not locked_bytes(parent) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert locked_bytes(parent) == [(100, 100), (201, 201), (203, 203)]
        code, _, errs = ds_run("resize", parent, "+1M")
        assert code == 1 and 'Failed to get "write" lock' in one_error_line(errs)
        with ds.open(parent) as reader:
            assert reader.read(4096) == bytes(4096)


def test_a_file_system_without_locks_opens_unlocked(image: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    """Where the file system refuses OFD locks (ENOLCK, EINVAL, ...) images open without
    them; any other failure of the lock call is an error."""
    import errno

    from diskspec.runtime import locking

    def refused(fd: int, cmd: int, kind: int, byte: int) -> int:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking, "_fcntl", refused)
    with ds.open(image, "r+") as writable:
        assert writable.size == 8 * MiB
    assert locked_bytes(image) == []

    def broken(fd: int, cmd: int, kind: int, byte: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(locking, "_fcntl", broken)
    with pytest.raises(OSError, match="Input/output error"):
        ds.open(image)
