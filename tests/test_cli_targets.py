"""Existing targets (issue 16, items 2 and 3): convert and create write into the file itself,
as qemu-img 7.2 does (through symlinks, keeping the inode, owner and mode; in a directory
that cannot be written), refuse a file in use with qemu's words, and print "Formatting"
only for a create that succeeds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_cli_parity import ds, held_read_write, qemu


def guest_sha(qemu_img: str, path: Path, fmt: str) -> str:
    """sha256 of the guest content as qemu-img reads it."""
    out = path.with_name(path.name + ".sha.raw")
    subprocess.run([qemu_img, "convert", "-f", fmt, "-O", "raw", str(path), str(out)],
                   capture_output=True, check=True)
    try:
        return hashlib.sha256(out.read_bytes()).hexdigest()
    finally:
        out.unlink()


def prepared(d: Path) -> tuple[Path, Path, Path]:
    """An old file with a symlink and a hard link to it, mode 0600."""
    d.mkdir()
    real = d / "real.img"
    real.write_bytes(b"old content " * 1000)
    real.chmod(0o600)
    (d / "link.img").symlink_to("real.img")
    os.link(real, d / "hard.img")
    return real, d / "link.img", d / "hard.img"


@pytest.mark.parametrize("fmt", ["raw", "vpc", "vhdx"])
def test_convert_into_existing_target_writes_the_file_itself(
        make_image: Callable[..., Path], tmp_path: Path, qemu_img: str, fmt: str) -> None:
    src = make_image("raw", "8M", writes=(("0x11", 0, 65536), ("0x22", 5 << 20, 4096)))
    shas = []
    for tool in ("qemu", "ds"):
        real, link, hard = prepared(tmp_path / tool)
        inode = real.stat().st_ino
        args = ("convert", "-f", "raw", "-O", fmt, src, link)
        code = qemu(qemu_img, *args)[0] if tool == "qemu" else ds(*args)[0]
        assert code == 0, tool
        assert link.is_symlink() and real.stat().st_ino == inode == hard.stat().st_ino, tool
        assert real.stat().st_mode & 0o777 == 0o600, tool
        shas.append(guest_sha(qemu_img, hard, fmt))
        if fmt == "vhdx":  # qemu-img cannot check vpc
            assert qemu(qemu_img, "check", "-f", fmt, real)[0] == 0, tool
        left = sorted(p.name for p in real.parent.iterdir())
        assert left == ["hard.img", "link.img", "real.img"], tool
    assert shas[0] == shas[1]


def test_convert_into_existing_target_in_a_read_only_directory(
        make_image: Callable[..., Path], tmp_path: Path, qemu_img: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_image("raw", "4M", writes=(("0x33", 4096, 8192),))
    d = tmp_path / "ro"
    d.mkdir()
    target = d / "t.vhd"
    target.write_bytes(b"")
    d.chmod(0o555)
    from diskspec.runtime.ops import overwrite

    real_access = os.access  # root may write anywhere: the directory reads as unwritable

    def access(path: str | os.PathLike[str], mode: int) -> bool:
        return False if Path(path) == d else real_access(path, mode)

    try:
        assert qemu(qemu_img, "convert", "-O", "vpc", src, target)[0] == 0
        target.write_bytes(b"")
        monkeypatch.setattr(overwrite, "os", _OsWith(access))
        assert ds("convert", "-O", "vpc", src, target)[0] == 0
        assert qemu(qemu_img, "compare", "-f", "raw", "-F", "vpc", src, target)[0] == 0
        assert [p.name for p in d.iterdir()] == ["t.vhd"]
    finally:
        d.chmod(0o755)


class _OsWith:
    """The os module, with another access()."""

    def __init__(self, access: Callable[[str | os.PathLike[str], int], bool]):
        self.access = access

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


def test_convert_new_target_leaves_no_temporary_file_and_names_the_target(
        make_image: Callable[..., Path], tmp_path: Path) -> None:
    src = make_image("raw", "4M", writes=(("0x44", 0, 4096),))
    out = tmp_path / "new" / "t.vhd"
    out.parent.mkdir()
    assert ds("convert", "-O", "vpc", src, out)[0] == 0
    assert [p.name for p in out.parent.iterdir()] == ["t.vhd"]
    code, _, errs = ds("convert", "-O", "vpc", src, tmp_path / "missing-dir" / "t.vhd")
    assert code == 1 and "diskspec-part" not in errs and "t.vhd" in errs


def test_convert_into_a_target_in_use_fails_as_qemu(make_image: Callable[..., Path],
                                                    tmp_path: Path, qemu_img: str) -> None:
    src = make_image("raw", "1M")
    target = tmp_path / "busy.vhd"
    qemu(qemu_img, "create", "-q", "-f", "vpc", target, "1M")
    before = target.read_bytes()
    with held_read_write(target):
        q = qemu(qemu_img, "convert", "-O", "vpc", src, target)
        d = ds("convert", "-O", "vpc", src, target)
    assert q[0] == d[0] == 1
    assert 'Failed to get "write" lock' in q[2] and 'Failed to get "write" lock' in d[2]
    assert target.read_bytes() == before


@pytest.mark.parametrize("fmt", ["raw", "vpc", "vhdx"])
def test_create_over_an_existing_file_overwrites_as_qemu(tmp_path: Path, qemu_img: str,
                                                         fmt: str) -> None:
    shas = []
    for tool in ("qemu", "ds"):
        real, link, hard = prepared(tmp_path / tool)
        inode = real.stat().st_ino
        args = ("create", "-f", fmt, link, "4M")
        code, out, _ = qemu(qemu_img, *args) if tool == "qemu" else ds(*args)
        assert code == 0 and out == f"Formatting '{link}', fmt={fmt} size=4194304\n" or \
            out.startswith(f"Formatting '{link}', fmt={fmt} size=4194304 "), (tool, out)
        assert real.stat().st_ino == inode and real.stat().st_mode & 0o777 == 0o600
        shas.append(guest_sha(qemu_img, hard, fmt))
        if fmt == "vhdx":
            assert qemu(qemu_img, "check", "-f", fmt, real)[0] == 0
    assert shas[0] == shas[1]


def test_create_over_a_file_in_use_fails_as_qemu_without_formatting(tmp_path: Path,
                                                                     qemu_img: str) -> None:
    target = tmp_path / "busy.vhd"
    qemu(qemu_img, "create", "-q", "-f", "vpc", target, "1M")
    before = target.read_bytes()
    with held_read_write(target):
        q = qemu(qemu_img, "create", "-f", "vpc", target, "2M")
        d = ds("create", "-f", "vpc", target, "2M")
    text = 'Failed to get "write" lock'
    assert q[0] == d[0] == 1 and text in q[2] and text in d[2]
    assert d[1] == ""  # qemu prints "Formatting" first; a create that fails prints nothing here
    assert target.read_bytes() == before


def test_create_that_fails_its_checks_prints_nothing(tmp_path: Path) -> None:
    code, out, errs = ds("create", "-f", "vpc", "-o", "block_size=3", tmp_path / "x.vhd", "1M")
    assert code == 1 and out == "" and errs
    assert not (tmp_path / "x.vhd").exists()


def test_create_cli_as_a_subprocess_over_existing(tmp_path: Path, qemu_img: str) -> None:
    target = tmp_path / "x.vhdx"
    target.write_bytes(b"\xff" * 100000)
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "create", "-q", "-f",
                           "vhdx", str(target), "1M"], capture_output=True, check=False)
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    assert qemu(qemu_img, "check", target)[0] == 0
