"""The backing-file policy (runtime/policy.py): the names an image carries for its parents
are data from whoever made it. By default a parent is opened only under the child's
directory (no absolute path, no `..`, no symlink out), only regular files are opened (a
FIFO never blocks us), and a raw file is a parent only when the user names it.
`backing_policy="any"` / `--parents=any` and an explicit `parent=` / `-b` widen it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.errors import DiskspecError, ParentMissingError

from .test_cli import ds_run

MiB = 1 << 20
SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 64


def vhd_parent(path: Path) -> bytes:
    with ds.create(path, "vpc", 4 * MiB) as image:
        content = (bytes(range(256)) * (image.size // 256 + 1))[: image.size]  # CHS-rounded
        image.write(content)
    return content


def child_of(parent: Path, child: Path, backing_policy: str = "confined") -> Path:
    """A differencing VHD over `parent` (its locators name the parent absolutely and
    relatively, as Hyper-V and qemu write them)."""
    child.parent.mkdir(parents=True, exist_ok=True)
    ds.create(child, "vpc", None, subformat="differencing", parent=parent,
              backing_policy=backing_policy).close()
    return child


def test_absolute_locator_outside_the_directory_is_refused_and_named(tmp_path: Path) -> None:
    parent = tmp_path / "elsewhere" / "parent.vhd"
    parent.parent.mkdir()
    content = vhd_parent(parent)
    child = child_of(parent, tmp_path / "vm" / "child.vhd", backing_policy="any")
    with pytest.raises(ParentMissingError) as caught:
        ds.open(child)
    message = str(caught.value)
    assert str(parent) in message and "refused by the backing policy" in message
    with ds.open(child, backing_policy="any") as image:  # widened: as qemu
        assert image.read() == content
    with ds.open(child, parent=parent) as image:  # named by the user
        assert image.read() == content


def test_parent_inside_the_directory_is_found(tmp_path: Path) -> None:
    parent = tmp_path / "vm" / "base" / "parent.vhd"
    parent.parent.mkdir(parents=True)
    content = vhd_parent(parent)
    child = child_of(parent, tmp_path / "vm" / "child.vhd")
    with ds.open(child) as image:
        assert image.backing is not None and image.backing.path.resolve() == parent.resolve()
        assert image.read() == content


def test_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "parent.vhd"
    outside.parent.mkdir()
    content = vhd_parent(outside)
    vm = tmp_path / "vm"
    vm.mkdir()
    (vm / "parent.vhd").symlink_to(outside)  # the name stays inside; the file does not
    child = child_of(vm / "parent.vhd", vm / "child.vhd", backing_policy="any")
    outside.rename(tmp_path / "outside" / "moved.vhd")  # only the symlink can reach it now
    (vm / "parent.vhd").unlink()
    (vm / "parent.vhd").symlink_to(tmp_path / "outside" / "moved.vhd")
    with pytest.raises(ParentMissingError, match="refused by the backing policy"):
        ds.open(child)
    with ds.open(child, backing_policy="any") as image:
        assert image.read() == content


def test_crafted_child_does_not_copy_a_file_outside(tmp_path: Path) -> None:
    """The audit's exploit: a differencing VHD whose locator names a file outside its
    directory (here a raw 'secret'); convert must not copy that file into its output."""
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    child = child_of(secret, tmp_path / "upload" / "child.vhd", backing_policy="any")
    out = tmp_path / "out.raw"
    code, _, errs = ds_run("convert", "-O", "raw", child, out)
    assert code == 1 and str(secret) in errs and "refused by the backing policy" in errs
    assert not out.exists()
    # a raw file next to the child is still not taken from a locator
    local = tmp_path / "upload" / "passwd"
    local.write_bytes(SECRET)
    child2 = child_of(local, tmp_path / "upload" / "child2.vhd", backing_policy="any")
    with pytest.raises(ParentMissingError, match="raw file is a parent only when named"):
        ds.open(child2)
    # named by the user (or under --parents=any) it is the parent the user chose
    code, _, errs = ds_run("convert", "--parents", "any", "-O", "raw", child, out)
    assert code == 0, errs
    assert out.read_bytes()[: len(SECRET)] == SECRET


def test_info_opens_the_chain_only_with_backing_chain(tmp_path: Path) -> None:
    parent = tmp_path / "elsewhere" / "parent.vhd"
    parent.parent.mkdir()
    vhd_parent(parent)
    child = child_of(parent, tmp_path / "vm" / "child.vhd", backing_policy="any")
    code, out, errs = ds_run("info", child)  # as qemu-img info: the child alone
    assert code == 0, errs
    assert "backing file" in out
    code, _, errs = ds_run("info", "--backing-chain", child)
    assert code == 1 and "refused by the backing policy" in errs
    code, out, errs = ds_run("info", "--backing-chain", "--parents=any", child)
    assert code == 0, errs
    assert out.count("image:") == 2


FIFO_CASES = [["info", "{fifo}"], ["check", "{fifo}"], ["info", "-f", "raw", "{fifo}"],
              ["map", "-f", "raw", "{fifo}"],
              ["create", "-f", "vpc", "-b", "{fifo}", "-F", "raw", "{dir}/child.vhd"]]


@pytest.mark.parametrize("argv", FIFO_CASES, ids=lambda a: " ".join(a[:-1]))
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, argv: list[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args = [a.format(fifo=fifo, dir=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "FIFO" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "child.vhd").exists()


def test_a_fifo_parent_is_refused_by_the_api(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhd"
    vhd_parent(parent)
    child = child_of(parent, tmp_path / "child.vhd")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DiskspecError, match="FIFO"):
        ds.open(child, parent=fifo)
    with pytest.raises(DiskspecError, match="FIFO"):
        ds.open(fifo, format="raw")
    parent.unlink()
    os.mkfifo(parent)  # the locator now names a FIFO
    with pytest.raises(ParentMissingError, match="FIFO"):
        ds.open(child)


def test_unknown_policy_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.vhd"
    vhd_parent(path)
    with pytest.raises(DiskspecError, match="backing policy"):
        ds.open(path, backing_policy="anywhere")
    code, _, errs = ds_run("info", "--parents", "anywhere", path)
    assert code == 1 and "--parents" in errs


def test_a_locator_with_a_nul_byte_is_refused_not_raised(tmp_path: Path) -> None:
    """Found by the conformance kit's hostile corpus: a NUL in a stored parent name made
    path resolution raise ValueError."""
    from diskspec.formats import vhd

    from .test_vhd_engine import set_locators

    parent = tmp_path / "parent.vhd"
    vhd_parent(parent)
    child = child_of(parent, tmp_path / "child.vhd")
    set_locators(child, [(vhd.PlatformCode.W2RU, "par\0ent.vhd".encode("utf-16-le"))])
    parent.rename(tmp_path / "elsewhere.vhd")
    with pytest.raises(ParentMissingError):
        ds.open(child)
