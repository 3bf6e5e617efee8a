"""diskspec.runtime.open() is a standard binary file object over the guest disk.

The oracle is Python's own file object: the same guest bytes as a raw file, opened with
open(path, "rb"), must answer every call the same way.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from pathlib import Path

import pytest

import diskspec.runtime as ds

from .conftest import run

MiB = 1 << 20


@pytest.fixture
def pair(tmp_path: Path, qemu_img: str) -> tuple[Path, Path]:
    """(raw file, VHDX that qemu-img converted it into)."""
    raw = tmp_path / "guest.raw"
    rng = random.Random(3)
    with open(raw, "wb") as f:
        f.truncate(6 * MiB)
        for at in (0, MiB + 123, 4 * MiB - 7):
            f.seek(at)
            f.write(rng.randbytes(300_000))
    vhdx = tmp_path / "guest.vhdx"
    run(qemu_img, "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx))
    return raw, vhdx


def test_reads_and_seeks_like_a_file(pair: tuple[Path, Path]) -> None:
    raw, vhdx = pair
    rng = random.Random(9)
    with open(raw, "rb", buffering=0) as want, ds.open(vhdx) as got:
        assert (got.readable(), got.seekable(), got.writable()) == (True, True, False)
        for _ in range(300):
            whence = rng.choice((io.SEEK_SET, io.SEEK_CUR, io.SEEK_END))
            offset = {io.SEEK_SET: rng.randrange(0, 7 * MiB),
                      io.SEEK_CUR: rng.randrange(-MiB, MiB) if want.tell() >= MiB else 100,
                      io.SEEK_END: -rng.randrange(0, 2 * MiB)}[whence]
            assert got.seek(offset, whence) == want.seek(offset, whence)
            n = rng.choice((0, 1, 511, 4096, 70_000, 2 * MiB))
            if rng.random() < 0.5:
                assert got.read(n) == want.read(n)
            else:
                a, b = bytearray(n), bytearray(n)
                assert got.readinto(a) == want.readinto(b) and a == b
            assert got.tell() == want.tell()
        got.seek(0)
        want.seek(0)
        assert got.read() == want.read()  # to the end
        assert got.read(10) == want.read(10) == b""


def test_works_where_file_objects_go(pair: tuple[Path, Path], tmp_path: Path) -> None:
    raw, vhdx = pair
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    with ds.open(vhdx) as image:
        out = tmp_path / "copy.raw"
        with open(out, "wb") as f:
            shutil.copyfileobj(image, f, 1 << 20)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
        image.seek(0)
        buffered = io.BufferedReader(image, 64 * 1024)
        assert hashlib.sha256(buffered.read()).hexdigest() == digest
        image.seek(0)
        assert hashlib.file_digest(image, "sha256").hexdigest() == digest


def test_file_object_attributes_and_errors(pair: tuple[Path, Path]) -> None:
    _, vhdx = pair
    image = ds.open(vhdx)
    assert image.name == str(vhdx) and image.mode == "rb" and not image.closed
    assert repr(image) == f"<diskspec Image name={str(vhdx)!r} format='vhdx' mode='rb' size={6 * MiB}>"
    with pytest.raises(io.UnsupportedOperation):  # as a read-only file refuses a write
        image.write(b"x")
    with pytest.raises(ds.ReadOnlyError):  # ... and it is diskspec's error too
        image.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        image.fileno()
    with pytest.raises(ValueError):
        image.seek(-1)
    image.close()
    assert image.closed and repr(image).endswith("closed>")
    with pytest.raises(ValueError):
        image.read(1)
    with pytest.raises(ValueError):  # the fast paths see the close too
        image.seek(0)
    with pytest.raises(ValueError):
        image.readinto(bytearray(1))
    with ds.open(vhdx, "r+") as writable:
        assert writable.mode == "rb+" and writable.writable()
