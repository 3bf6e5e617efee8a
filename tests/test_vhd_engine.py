"""The VHD engine against independent oracles.

Oracles: qemu-img/qemu-io (images qemu makes and writes must read the same through diskspec;
images diskspec makes and writes must read the same through `qemu-img convert -f vpc`),
libvhdi (pyvhdi) for fixed and dynamic images, and a raw shadow file for everything,
differencing images above all (qemu ignores the parent; libvhdi misreads partially set
bitmaps). qemu probes a fixed VHD as raw, so `-f vpc` is always given; qemu-img cannot
check vpc, so `qemu-img check` is never used here.
"""

from __future__ import annotations

import importlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds
from diskspec.formats import vhd
from diskspec.runtime.engines.vhd.engine import VhdEngine
from diskspec.runtime.errors import (
    ChecksumError,
    CorruptError,
    DiskspecError,
    NotThisFormatError,
    ParentMissingError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from diskspec.runtime.extent import State

from .conftest import run
from .shadow import ds_read, sha, write_both

KiB = 1 << 10
MiB = 1 << 20
SECTOR = 512
FOOTER = 512


# -- oracles and helpers -------------------------------------------------------------------


def vhd_engine(image: ds.Image) -> VhdEngine:
    """The image's engine, as the VHD engine whose internals these tests read."""
    assert isinstance(image.engine, VhdEngine)
    return image.engine


def qemu_raw(qemu_img: str, path: Path) -> bytes:
    """The guest content as qemu reads it (always -f vpc: qemu probes fixed VHD as raw)."""
    out = path.with_name(path.name + ".qemu.raw")
    run(qemu_img, "convert", "-f", "vpc", "-O", "raw", str(path), str(out))
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def qemu_info(qemu_img: str, path: Path, size_calc: str | None = None) -> dict[str, Any]:
    if size_calc is None:
        args = ["-f", "vpc", str(path)]
    else:
        args = ["--image-opts", f"driver=vpc,force_size_calc={size_calc},file.filename={path}"]
    info: dict[str, Any] = json.loads(run(qemu_img, "info", "--output=json", *args))
    return info


def qemu_write(qemu_io: str, path: Path, writes: list[tuple[int, int, int]]) -> None:
    """qemu-io `write -P pattern offset length` for each (pattern, offset, length), one run."""
    args = [qemu_io, "-f", "vpc"]
    for pattern, offset, length in writes:
        args += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    run(*args, str(path))


@pytest.fixture(scope="session")
def pyvhdi() -> Any:
    try:
        return importlib.import_module("pyvhdi")
    except ImportError:
        pytest.fail("pyvhdi is not installed (pip install libvhdi-python; it is in the test extras)")


def vhdi_read(pyvhdi: Any, path: Path) -> tuple[int, bytes]:
    """(media size, guest content) as libvhdi reads them."""
    f = pyvhdi.file()
    f.open(str(path))
    try:
        size = f.get_media_size()
        return size, f.read_buffer_at_offset(size, 0)
    finally:
        f.close()


def footer_of(path: Path) -> vhd.Footer:
    data = path.read_bytes()
    return vhd.Footer.parse(data, len(data) - FOOTER)


def patch_footer(path: Path, copy: bool = True, **fields: Any) -> vhd.Footer:
    """Change footer fields with the codec, fix the checksum, write back both copies."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - FOOTER)
        footer = vhd.Footer.parse(f.read(FOOTER))
        for name, value in fields.items():
            setattr(footer, name, value)
        raw = footer.update_checksum().build()
        f.seek(size - FOOTER)
        f.write(raw)
        if copy and footer.disk_type != vhd.DiskType.FIXED:
            f.seek(0)
            f.write(raw)
    return footer


def patch_header(path: Path, **fields: Any) -> vhd.DynamicHeader:
    """Change dynamic header fields with the codec and fix its checksum."""
    at = footer_of(path).data_offset
    with open(path, "r+b") as f:
        f.seek(at)
        header = vhd.DynamicHeader.parse(f.read(vhd.DynamicHeader.SIZE))
        for name, value in fields.items():
            setattr(header, name, value)
        f.seek(at)
        f.write(header.update_checksum().build())
    return header


def header_of(path: Path) -> vhd.DynamicHeader:
    data = path.read_bytes()
    return vhd.DynamicHeader.parse(data, vhd.Footer.parse(data, len(data) - FOOTER).data_offset)


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset if offset >= 0 else path.stat().st_size + offset)
        f.write(data)


def edge_writes(size: int, block: int = 2 * MiB) -> list[tuple[int, int]]:
    """(offset, length) at unaligned offsets, across block boundaries and in the last sector."""
    out = [(0, 1), (511, 2), (block - 1000, 3000), (2 * block - 7, 14), (12345, 100_000),
           (3 * block - 3, block + 6), (size - SECTOR, SECTOR), (size - 1, 1), (size - 700, 300)]
    return [(o, n) for o, n in out if o >= 0 and o + n <= size]


def random_writes(image: ds.Image, shadow: bytearray, rng: random.Random, count: int,
                  longest: int = 300_000) -> None:
    for _ in range(count):
        offset = rng.randrange(image.size)
        length = min(rng.choice([1, 511, 512, 513, 4096, rng.randrange(1, longest)]), image.size - offset)
        write_both(image, shadow, offset, rng.randbytes(length))


def assert_extents_match(path: Path, content: bytes, parent_content: bytes | None = None,
                         **kwargs: Any) -> None:
    """extents() covers the disk in order; ZERO reads zero, DATA is at file_offset, BACKING is
    the parent's."""
    raw = path.read_bytes()
    with ds.open(path, **kwargs) as image:
        pos = 0
        for e in image.extents():
            assert e.offset == pos and e.length > 0
            want = content[e.offset : e.end]
            if e.state is State.ZERO:
                assert not any(want), f"ZERO extent {e} holds data"
            elif e.state is State.DATA:
                assert e.file_offset is not None
                assert raw[e.file_offset : e.file_offset + e.length] == want, f"DATA extent {e}"
            else:
                assert parent_content is not None, f"BACKING extent {e} in an image without parent"
                assert parent_content[e.offset : e.end] == want, f"BACKING extent {e}"
            pos = e.end
        assert pos == image.size == len(content)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) when the body takes longer than `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def open_read_all(path: Path, **kwargs: Any) -> bytes:
    with time_limit(5), ds.open(path, **kwargs) as image:
        return image.read()


def file_state(path: Path) -> tuple[int, int, int, str]:
    st_ = path.stat()
    return st_.st_mtime_ns, st_.st_ctime_ns, st_.st_size, sha(path.read_bytes())


# -- 1. images qemu makes and writes --------------------------------------------------------

QEMU_IMAGES = [
    pytest.param("subformat=fixed", "10M", id="fixed"),
    pytest.param("subformat=dynamic", "33M", id="dynamic"),
    pytest.param("subformat=dynamic,force_size=on", "33M", id="dynamic-force_size"),
    pytest.param("subformat=fixed,force_size=on", "10M", id="fixed-force_size"),
]


def qemu_patterned(make_image: Callable[..., Path], qemu_img: str, qemu_io: str, options: str,
                   size: str) -> tuple[Path, int]:
    path = make_image("vpc", size, options)
    virtual = qemu_info(qemu_img, path)["virtual-size"]
    writes = [(0x11 + 0x11 * i % 0xEE, o, n) for i, (o, n) in enumerate(edge_writes(virtual))]
    qemu_write(qemu_io, path, writes)
    return path, virtual


@pytest.mark.parametrize("options,size", QEMU_IMAGES)
def test_qemu_made_image_reads_identically(make_image: Callable[..., Path], qemu_img: str,
                                           qemu_io: str, pyvhdi: Any, options: str, size: str) -> None:
    path, virtual = qemu_patterned(make_image, qemu_img, qemu_io, options, size)
    reference = qemu_raw(qemu_img, path)
    assert len(reference) == virtual
    with ds.open(path) as image:
        assert image.format == "vpc"
        assert image.size == virtual
        content = image.read()
    assert sha(content) == sha(reference)
    assert vhdi_read(pyvhdi, path) == (virtual, reference)
    # positioned reads at odd places agree too
    with ds.open(path) as image:
        for offset, length in [(510, 5), (2 * MiB - 3, 6), (virtual - 1, 1), (virtual - 513, 600)]:
            assert image.pread(offset, length) == reference[offset : offset + length]
    assert_extents_match(path, reference)


@pytest.mark.parametrize("options,size", QEMU_IMAGES)
def test_diskspec_writes_into_qemu_made_image(make_image: Callable[..., Path], qemu_img: str,
                                              qemu_io: str, pyvhdi: Any, options: str, size: str) -> None:
    path, virtual = qemu_patterned(make_image, qemu_img, qemu_io, options, size)
    shadow = bytearray(qemu_raw(qemu_img, path))
    rng = random.Random(options)
    with ds.open(path, "r+") as image:
        for offset, length in edge_writes(virtual):
            write_both(image, shadow, offset + 3 if offset + length + 3 <= virtual else offset,
                       rng.randbytes(length))
        random_writes(image, shadow, rng, 10)
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)
    assert vhdi_read(pyvhdi, path) == (virtual, bytes(shadow))
    assert sha(ds_read(path)) == sha(shadow)
    with ds.open(path) as image:
        assert image.engine.check().clean


# -- 2. images diskspec makes and writes ----------------------------------------------------

OUR_IMAGES = [
    pytest.param("fixed", {}, id="fixed"),
    pytest.param("dynamic", {}, id="dynamic"),
    pytest.param("dynamic", {"block_size": 512 * KiB}, id="dynamic-512K"),
    pytest.param("dynamic", {"force_size": True}, id="dynamic-force_size"),
    pytest.param("fixed", {"force_size": True}, id="fixed-force_size"),
]


@pytest.mark.parametrize("subformat,options", OUR_IMAGES)
def test_created_image_reads_identically_through_qemu_and_libvhdi(
        tmp_path: Path, qemu_img: str, pyvhdi: Any, subformat: str, options: dict[str, Any]) -> None:
    path = tmp_path / "ours.vhd"
    rng = random.Random(subformat + repr(options))
    with ds.create(path, "vpc", 10 * MiB + 123, subformat=subformat, **options) as image:
        size = image.size
        if options.get("force_size"):
            assert size == 10 * MiB + SECTOR  # rounded up to a sector, kept exact
        shadow = bytearray(size)
        block = options.get("block_size", 2 * MiB)
        for offset, length in edge_writes(size, block):
            write_both(image, shadow, offset, rng.randbytes(length))
        random_writes(image, shadow, rng, 12)
    assert sha(ds_read(path)) == sha(shadow)
    assert qemu_info(qemu_img, path)["virtual-size"] == size
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)
    assert vhdi_read(pyvhdi, path) == (size, bytes(shadow))
    assert_extents_match(path, bytes(shadow))
    with ds.open(path) as image:
        assert image.engine.check().clean


@pytest.mark.parametrize("size", ["1M", "10M", "33M", str(100 * MiB + 1), "1G", "130G"])
@pytest.mark.parametrize("force", [False, True], ids=["chs", "force_size"])
def test_create_matches_qemu_sizes_and_layout(tmp_path: Path, make_image: Callable[..., Path],
                                              size: str, force: bool) -> None:
    """diskspec create computes size, geometry and BAT like qemu-img create (vhd.md 4.3, 10)."""
    theirs = make_image("vpc", size, "subformat=dynamic" + (",force_size=on" if force else ""))
    units = {"M": MiB, "G": 1 << 30}
    nbytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    ours = tmp_path / "ours.vhd"
    ds.create(ours, "vpc", nbytes, subformat="dynamic", force_size=force).close()
    a, b = footer_of(theirs), footer_of(ours)
    for name in ("current_size", "original_size", "disk_geometry", "disk_type", "creator_application",
                 "data_offset", "features", "format_version", "creator_host_os"):
        assert getattr(b, name) == getattr(a, name), name
    ha, hb = header_of(theirs), header_of(ours)
    for name in ("table_offset", "max_table_entries", "block_size", "data_offset", "header_version"):
        assert getattr(hb, name) == getattr(ha, name), name
    with ds.open(theirs) as x, ds.open(ours) as y:
        assert x.size == y.size


# -- 3. differencing images ------------------------------------------------------------------

PARENT_KINDS = ["vhd-dynamic", "vhd-fixed-qemu", "raw"]


def make_parent(kind: str, directory: Path, make_image: Callable[..., Path] | None = None,
                seed: int = 0) -> tuple[Path, bytes]:
    """A parent image of `kind` with some content; returns (path, guest content)."""
    rng = random.Random(seed)
    if kind == "raw":
        path = directory / "parent.img"
        path.write_bytes(rng.randbytes(6 * MiB + 3 * SECTOR))
        return path, path.read_bytes()
    if kind == "vhd-fixed-qemu":
        assert make_image is not None
        made = make_image("vpc", "6M", "subformat=fixed",
                          writes=[("0x5a", 0, 3 * MiB + 5), ("0xa5", 4 * MiB - 1, 2 * MiB)])
        path = directory / "parent.vhd"
        shutil.move(made, path)
        return path, ds_read(path)
    path = directory / "parent.vhd"
    with ds.create(path, "vpc", 6 * MiB, block_size=512 * KiB) as image:
        shadow = bytearray(image.size)
        random_writes(image, shadow, rng, 8)
    return path, bytes(shadow)


def child_workload(child: ds.Image, shadow: bytearray, rng: random.Random) -> None:
    """Partial sectors at block edges, whole blocks, runs over allocated and unallocated blocks."""
    bs = vhd_engine(child).block_size
    for offset, length in [(bs - 3, 7), (100, 10), (bs + 511, 2), (2 * bs, bs), (bs // 2, 2 * bs),
                           (child.size - 1, 1), (child.size - 600, 400), (3 * bs + 17, 1)]:
        write_both(child, shadow, offset, rng.randbytes(length))
    random_writes(child, shadow, rng, 25, longest=700_000)


@pytest.mark.parametrize("kind", PARENT_KINDS)
def test_differencing_reads_through_its_parent(tmp_path: Path, make_image: Callable[..., Path],
                                               qemu_img: str, kind: str) -> None:
    parent, parent_content = make_parent(kind, tmp_path, make_image)
    before = file_state(parent)
    child = tmp_path / "child.vhd"
    rng = random.Random(kind)
    with ds.create(child, "vpc", None, subformat="differencing", parent=parent,
                   block_size=512 * KiB) as image:
        assert image.size == len(parent_content)
        assert image.read() == parent_content  # a fresh child reads as its parent
        shadow = bytearray(parent_content)
        child_workload(image, shadow, rng)
        image.seek(0)
        assert sha(image.read()) == sha(shadow)
    # reopened: the parent is found by its locators (a raw one only when named: the backing
    # policy never takes a raw file for a parent on a locator's word)
    if kind == "raw":
        with pytest.raises(ParentMissingError, match="raw file is a parent only when named"):
            ds.open(child)
    else:
        with ds.open(child) as image:
            assert image.backing is not None and image.backing.path.resolve() == parent.resolve()
            assert sha(image.read()) == sha(shadow)
    # reopened with the parent named explicitly, and written again
    with ds.open(child, "r+", parent=parent) as image:
        assert sha(image.read()) == sha(shadow)
        random_writes(image, shadow, rng, 10)
    with ds.open(child, parent=parent) as image:
        assert sha(image.read()) == sha(shadow)
        assert image.engine.check().clean
    assert_extents_match(child, bytes(shadow), parent_content, parent=parent)
    # alone, the child reads as qemu reads it (qemu ignores the parent of a differencing VHD)
    assert sha(ds_read(child, backing=False)) == sha(qemu_raw(qemu_img, child))
    assert file_state(parent) == before  # the parent is never written


def test_differencing_chain_over_raw_base(tmp_path: Path) -> None:
    base, content = make_parent("raw", tmp_path)
    shadow = bytearray(content)
    rng = random.Random(7)
    chain = [base]
    for i in range(3):
        link = tmp_path / f"link{i}.vhd"
        with ds.create(link, "vpc", None, subformat="differencing", parent=chain[-1],
                       block_size=[4 * KiB, 512 * KiB, 2 * MiB][i], backing_policy="any") as image:
            random_writes(image, shadow, rng, 8)
        chain.append(link)
    with ds.open(chain[-1], backing_policy="any") as image:  # the raw base, from a locator
        assert [p.path.name for p in image.chain()] == [p.name for p in reversed(chain)]
        assert sha(image.read()) == sha(shadow)
    with pytest.raises(ParentMissingError, match="raw file is a parent only when named"):
        ds.open(chain[-1])


def test_parent_found_when_the_pair_moves(tmp_path: Path) -> None:
    (tmp_path / "a" / "disks").mkdir(parents=True)
    parent, content = make_parent("vhd-dynamic", tmp_path / "a" / "disks")
    child = tmp_path / "a" / "child.vhd"
    with ds.create(child, "vpc", None, subformat="differencing", parent=parent) as image:
        shadow = bytearray(content)
        write_both(image, shadow, 1000, b"child data")
    shutil.move(tmp_path / "a", tmp_path / "b")  # absolute locators are stale now
    with ds.open(tmp_path / "b" / "child.vhd") as image:
        assert image.backing is not None
        assert image.backing.path.resolve() == (tmp_path / "b" / "disks" / "parent.vhd").resolve()
        assert image.read() == shadow


def set_locators(child: Path, entries: list[tuple[vhd.PlatformCode, bytes]]) -> None:
    """Replace the child's parent locators by `entries` (data placed in the existing areas)."""
    header = header_of(child)
    areas = sorted(loc.platform_data_offset for loc in header.parent_locators
                   if loc.platform_code != vhd.PlatformCode.NONE)
    locs = []
    for (code, data), at in zip(entries, areas, strict=False):
        assert len(data) <= 1024
        poke(child, at, data.ljust(1024, b"\0"))
        locs.append(vhd.ParentLocator(code, 1024, len(data), 0, at))
    locs += [vhd.ParentLocator(vhd.PlatformCode.NONE, 0, 0, 0, 0)] * (8 - len(locs))
    patch_header(child, parent_locators=locs)


@pytest.mark.parametrize("locator", ["W2ku-drive-letter", "W2ru-backslashes", "parent-name-only",
                                     "Wi2k-ansi"])
def test_parent_found_by_windows_locators(tmp_path: Path, locator: str) -> None:
    """Locators written on Windows: backslashes, drive letters, ANSI; or only the parent name."""
    sub = tmp_path / "parents" if locator == "W2ru-backslashes" else tmp_path
    sub.mkdir(exist_ok=True)
    parent, content = make_parent("vhd-dynamic", sub)
    child = tmp_path / "kids" / "child.vhd"
    child.parent.mkdir()
    ds.create(child, "vpc", None, subformat="differencing", parent=parent).close()
    P = vhd.PlatformCode
    if locator == "W2ku-drive-letter":
        shutil.move(parent, child.parent / "parent.vhd")
        set_locators(child, [(P.W2KU, "C:\\Hyper-V\\Disks\\parent.vhd".encode("utf-16-le"))])
    elif locator == "W2ru-backslashes":
        set_locators(child, [(P.W2RU, ".\\..\\parents\\parent.vhd".encode("utf-16-le"))])
    elif locator == "Wi2k-ansi":
        shutil.move(parent, child.parent / "parent.vhd")
        set_locators(child, [(P.WI2K, b"D:\\vpc\\parent.vhd")])
    else:
        shutil.move(parent, child.parent / "parent.vhd")
        set_locators(child, [])
    policy = "confined"
    if locator == "W2ru-backslashes":  # ..\ climbs out of the child's directory
        with pytest.raises(ParentMissingError, match="refused by the backing policy"):
            ds.open(child)
        policy = "any"
    with ds.open(child, backing_policy=policy) as image:
        assert image.backing is not None and image.backing.path.name == "parent.vhd"
        assert image.read() == content


def test_missing_parent_raises_parent_missing(tmp_path: Path) -> None:
    parent, _ = make_parent("vhd-dynamic", tmp_path)
    child = tmp_path / "child.vhd"
    ds.create(child, "vpc", None, subformat="differencing", parent=parent).close()
    parent.rename(tmp_path / "elsewhere.vhd")
    with pytest.raises(ParentMissingError, match="parent"):
        open_read_all(child)
    with pytest.raises(ParentMissingError):
        open_read_all(child, parent=tmp_path / "no-such-parent.vhd")
    # opened alone on purpose: no parent needed, unallocated data reads as zeros
    assert not any(open_read_all(child, backing=False))


@pytest.mark.parametrize("impostor", ["other-vhd-same-size", "raw-other-size"])
def test_wrong_parent_raises_parent_missing(tmp_path: Path, impostor: str) -> None:
    parent, content = make_parent("vhd-dynamic", tmp_path)
    child = tmp_path / "child.vhd"
    ds.create(child, "vpc", None, subformat="differencing", parent=parent).close()
    parent.unlink()
    if impostor == "other-vhd-same-size":  # same name and size, another unique id
        ds.create(parent, "vpc", len(content), block_size=512 * KiB).close()
        assert ds_read(parent) == bytes(len(content))
    else:
        parent.write_bytes(bytes(len(content) + 4096))
    with pytest.raises(ParentMissingError, match="parent"):
        open_read_all(child)
    # named explicitly, the identity check becomes a warning (the documented override)
    with ds.open(child, parent=parent) as image:
        assert any("parent" in w and "explicitly" in w for w in image.engine.warnings)


def test_parent_loop_on_itself_is_corrupt(tmp_path: Path) -> None:
    """A child whose locators name its own file (and whose parent id is its own id)."""
    loop = tmp_path / "loop.vhd"
    ds.create(loop, "vpc", 4 * MiB).close()
    child = tmp_path / "child.vhd"
    ds.create(child, "vpc", None, subformat="differencing", parent=loop).close()
    child.replace(loop)  # copy + rename: every locator of the child now names itself
    patch_header(loop, parent_unique_id=footer_of(loop).unique_id)
    start = time.perf_counter()
    with pytest.raises(CorruptError, match="loop"):
        open_read_all(loop)
    assert time.perf_counter() - start < 1.0


def test_parent_loop_of_two_images_is_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "p.vhd"
    ds.create(p, "vpc", 4 * MiB).close()
    b = tmp_path / "b.vhd"
    ds.create(b, "vpc", None, subformat="differencing", parent=p).close()
    a = tmp_path / "a.vhd"
    ds.create(a, "vpc", None, subformat="differencing", parent=b).close()
    a.replace(p)  # p.vhd -> b.vhd -> p.vhd
    patch_header(b, parent_unique_id=footer_of(p).unique_id)
    for start_at in (p, b):
        start = time.perf_counter()
        with pytest.raises(CorruptError, match="loop"):
            open_read_all(start_at)
        assert time.perf_counter() - start < 1.0


def test_partial_sector_write_needs_the_parent(tmp_path: Path) -> None:
    parent, content = make_parent("raw", tmp_path)
    child = tmp_path / "child.vhd"
    ds.create(child, "vpc", None, subformat="differencing", parent=parent).close()
    with ds.open(child, "r+", backing=False) as image:
        image.seek(2 * SECTOR)
        image.write(b"w" * SECTOR)  # whole sectors: fine without the parent
        image.seek(5 * SECTOR + 3)
        with pytest.raises(UnsupportedFeatureError):
            image.write(b"partial")
    shadow = bytearray(content)
    shadow[2 * SECTOR : 3 * SECTOR] = b"w" * SECTOR
    assert ds_read(child, parent=parent) == shadow


def test_create_differencing_of_another_size_leaves_no_file(tmp_path: Path) -> None:
    """A child of another size than its parent is refused (issue 3) -- before any file is made."""
    parent, _ = make_parent("vhd-dynamic", tmp_path)
    child = tmp_path / "child.vhd"
    with pytest.raises(DiskspecError):
        ds.create(child, "vpc", 20 * MiB, subformat="differencing", parent=parent).close()
    assert not child.exists(), "a failed create left a half-made image behind"


def test_create_differencing_over_raw_of_odd_size(tmp_path: Path) -> None:
    """A raw parent whose size is not a whole number of sectors: either a working child (the tail
    past the parent reads as zeros) or a clear error that leaves no file behind."""
    parent = tmp_path / "odd.img"
    parent.write_bytes(random.Random(3).randbytes(MiB + 1))
    child = tmp_path / "child.vhd"
    try:
        image = ds.create(child, "vpc", None, subformat="differencing", parent=parent)
    except DiskspecError:
        assert not child.exists(), "a failed create left a half-made image behind"
        return
    with image:
        assert image.read()[: MiB + 1] == parent.read_bytes()
    assert ds_read(child, parent=parent)[: MiB + 1] == parent.read_bytes()


# -- 5. split images -----------------------------------------------------------------------------


def split_into(data: bytes, base: Path, cuts: list[int]) -> list[Path]:
    """Cut `data` at `cuts` into base.vhd, base.v01, base.v02, ..."""
    bounds = [0, *cuts, len(data)]
    names = [base.with_suffix(".vhd")] + [base.with_suffix(f".v{k:02d}") for k in range(1, len(bounds) - 1)]
    for name, start, stop in zip(names, bounds, bounds[1:], strict=False):
        name.write_bytes(data[start:stop])
    return names


def split_roundtrip(tmp_path: Path, qemu_img: str, whole: Path, cuts: list[int], seed: int) -> None:
    data = whole.read_bytes()
    (tmp_path / "split").mkdir()
    pieces = split_into(data, tmp_path / "split" / "x", cuts)
    sizes = [p.stat().st_size for p in pieces]
    shadow = bytearray(ds_read(whole))
    with ds.open(pieces[0]) as image:  # probed by content, or by extension for fixed images
        assert image.format == "vpc"
        assert any("split" in w for w in image.engine.warnings)
        assert sha(image.read()) == sha(shadow)
        for cut in cuts:  # reads across every piece boundary, in guest terms too
            if cut < image.size:
                assert image.pread(cut - 5, 10) == shadow[cut - 5 : cut + 5]
    # the same writes (with allocations) to the split image and to an unsplit copy
    unsplit = tmp_path / "unsplit.vhd"
    shutil.copy(whole, unsplit)
    rng = random.Random(seed)
    size = len(shadow)
    writes = [(o, rng.randbytes(n)) for o, n in edge_writes(size)]
    writes += [(o, rng.randbytes(min(300_000, size - o))) for o in
               (rng.randrange(size) for _ in range(8))]
    for target in (pieces[0], unsplit):
        with ds.open(target, "r+") as image:
            for offset, chunk in writes:
                image.seek(offset)
                image.write(chunk)
    for offset, chunk in writes:
        shadow[offset : offset + len(chunk)] = chunk
    new_sizes = [p.stat().st_size for p in pieces]
    assert new_sizes[:-1] == sizes[:-1], "a piece other than the last changed its size"
    joined = b"".join(p.read_bytes() for p in pieces)
    assert joined == unsplit.read_bytes(), "a write went to the wrong piece"
    assert sha(ds_read(pieces[0])) == sha(shadow)
    (tmp_path / "joined.vhd").write_bytes(joined)
    assert sha(qemu_raw(qemu_img, tmp_path / "joined.vhd")) == sha(shadow)


def test_split_fixed_image(tmp_path: Path, qemu_img: str) -> None:
    whole = tmp_path / "whole.vhd"
    with ds.create(whole, "vpc", 10 * MiB, subformat="fixed") as image:
        random_writes(image, bytearray(image.size), random.Random(5), 10)
    size = whole.stat().st_size
    # a piece boundary inside a sector, one inside the footer
    split_roundtrip(tmp_path, qemu_img, whole, [1_234_567, 4_234_568, size - 100], seed=1)


def test_split_dynamic_image(tmp_path: Path, qemu_img: str, make_image: Callable[..., Path]) -> None:
    whole = make_image("vpc", "10M", "subformat=dynamic", writes=[("0x3c", 2 * MiB + 5, 5000)])
    size = whole.stat().st_size
    # cuts inside the dynamic header, inside the BAT, inside the one block, inside the footer
    split_roundtrip(tmp_path, qemu_img, whole, [700, 1700, 2 * MiB + 333, size - 100], seed=2)


@pytest.mark.parametrize("missing", [1, 2])
@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_split_image_with_a_missing_piece(tmp_path: Path, subformat: str, missing: int) -> None:
    """A gap in the pieces (vhd-split-and-locators.md A.4: ".v02 present but .v01 missing") is
    a clear error, or at least a warning that names the missing piece -- never a silent open
    of the first pieces as if they were the whole image."""
    whole = tmp_path / "whole.vhd"
    with ds.create(whole, "vpc", 10 * MiB, subformat=subformat) as image:
        image.write(b"a" * 5 * MiB)
    pieces = split_into(whole.read_bytes(), tmp_path / "x", [3 * MiB, 4 * MiB, 5 * MiB])
    pieces[missing].unlink()
    gone = pieces[missing].name
    number = f"{missing:02d}"  # named as x.v01 or as "piece 01"
    try:
        with time_limit(5), ds.open(pieces[0], format="vpc") as image:
            warnings = image.engine.warnings
    except CorruptError as exc:
        assert number in str(exc), exc
        return
    assert any(number in w for w in warnings), f"opened without a word about {gone}: {warnings}"


# -- 6. size rules ---------------------------------------------------------------------------------

CHS_SIZE = 302 * 4 * 17 * SECTOR  # qemu's 10M: geometry 302/4/17
CURRENT = 10 * MiB  # the current_size we patch in: smaller than the geometry says
C = vhd.CreatorApplication


@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
@pytest.mark.parametrize("creator,rule", [
    (C.VIRTUAL_PC, "chs"), (C.QEMU, "chs"), (C.WINDOWS, "current_size"),
    (C.QEMU_FORCE_SIZE, "current_size"), (C.VIRTUAL_SERVER, "current_size"), (C.AZURE, "current_size"),
    (C.DISK2VHD, "current_size"), (C.DISK2VHD_SPACE, "current_size"), (C.XEN_BLKTAP, "current_size"),
    (C.CITRIX_XENCONVERTER, "current_size"), (C.VIRTUALBOX, "current_size"), (0x12345678, "current_size"),
], ids=lambda v: v if isinstance(v, str) else int(v).to_bytes(4, "big").decode("latin-1").strip("\0 "))
def test_size_rule_by_creator(make_image: Callable[..., Path], qemu_img: str, subformat: str,
                              creator: int, rule: str) -> None:
    path = make_image("vpc", "10M", f"subformat={subformat}", writes=[("0x77", 0, CHS_SIZE)])
    patch_footer(path, creator_application=creator, current_size=CURRENT)
    expected = {"chs": CHS_SIZE, "current_size": CURRENT}
    with ds.open(path) as image:
        assert image.size == expected[rule]
        assert image.read() == b"\x77" * expected[rule]
    for override in ("chs", "current_size"):
        with ds.open(path, size_rule=override) as image:
            assert image.size == expected[override]
            assert image.read() == b"\x77" * expected[override]
        # qemu's force_size_calc is the same override
        assert qemu_info(qemu_img, path, override)["virtual-size"] == expected[override]
    if creator in (C.VIRTUAL_PC, C.QEMU, C.WINDOWS, C.QEMU_FORCE_SIZE, C.DISK2VHD_SPACE, C.XEN_BLKTAP,
                   C.CITRIX_XENCONVERTER):
        # the creators on which qemu 7.2's older rule agrees with the newer one
        assert qemu_info(qemu_img, path)["virtual-size"] == expected[rule]


def test_size_rule_max_geometry_uses_current_size(tmp_path: Path) -> None:
    path = tmp_path / "max.vhd"
    ds.create(path, "vpc", 10 * MiB).close()
    patch_footer(path, creator_application=C.VIRTUAL_PC, disk_geometry=vhd.DiskGeometry(65535, 16, 255))
    for rule in ("auto", "chs", "current_size"):
        with ds.open(path, size_rule=rule) as image:
            assert image.size == footer_of(path).current_size


def test_size_rule_rejects_unknown_rule(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ds.create(path, "vpc", MiB).close()
    with pytest.raises(DiskspecError):
        ds.open(path, size_rule="bogus")


# -- 7. bad input ----------------------------------------------------------------------------------


@pytest.fixture
def dynamic_image(tmp_path: Path) -> tuple[Path, bytes]:
    """A 10 MiB dynamic image with blocks 0 and 1 allocated; returns (path, guest content)."""
    path = tmp_path / "dyn.vhd"
    with ds.create(path, "vpc", 10 * MiB) as image:
        shadow = bytearray(image.size)
        write_both(image, shadow, 100, random.Random(1).randbytes(3 * MiB))
    return path, bytes(shadow)


@pytest.mark.parametrize("keep", [0, 100, 600, 1000, 1600, 2 * MiB, 4 * MiB + 100])
def test_truncated_dynamic_image(dynamic_image: tuple[Path, bytes], keep: int) -> None:
    path, _ = dynamic_image
    with open(path, "r+b") as f:
        f.truncate(keep)
    with pytest.raises(DiskspecError):
        open_read_all(path, format="vpc")


def test_dynamic_image_without_its_end_footer_uses_the_copy(dynamic_image: tuple[Path, bytes]) -> None:
    path, content = dynamic_image
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - FOOTER)
    with ds.open(path) as image:
        assert image.engine.warnings, "the missing footer is not reported"
        assert image.read() == content


def test_truncated_fixed_image(tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    ds.create(path, "vpc", 4 * MiB, subformat="fixed").close()
    data = path.read_bytes()
    for keep in (0, 100, 511, 2 * MiB, len(data) - 1000):
        path.write_bytes(data[:keep])
        with pytest.raises(DiskspecError):
            open_read_all(path, format="vpc")


@pytest.mark.parametrize("cookie", [b"CONECTIX", b"v_poison", b"\0" * 8])
@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_wrong_cookie(tmp_path: Path, subformat: str, cookie: bytes) -> None:
    path = tmp_path / "c.vhd"
    ds.create(path, "vpc", 4 * MiB, subformat=subformat).close()
    poke(path, -FOOTER, cookie)
    if subformat == "dynamic":
        poke(path, 0, cookie)
    with pytest.raises(NotThisFormatError):
        open_read_all(path, format="vpc")
    with ds.open(path) as image:  # probing: no longer recognised as VHD
        assert image.format != "vpc"


def test_bad_footer_checksum_of_fixed_image(tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    ds.create(path, "vpc", 4 * MiB, subformat="fixed").close()
    poke(path, -FOOTER + 100, b"\x01")  # a reserved byte: only the checksum notices
    with pytest.raises(ChecksumError):
        open_read_all(path)


def test_bad_end_footer_checksum_with_a_valid_copy(dynamic_image: tuple[Path, bytes],
                                                   qemu_img: str) -> None:
    path, content = dynamic_image
    poke(path, -FOOTER + 100, b"\x01")
    with ds.open(path) as image:
        assert any("checksum" in w for w in image.engine.warnings)
        assert image.read() == content
    assert qemu_raw(qemu_img, path) == content  # qemu trusts the copy at 0 too


def test_bad_footer_copy_checksum_is_reported(dynamic_image: tuple[Path, bytes]) -> None:
    path, content = dynamic_image
    poke(path, 100, b"\x01")
    with ds.open(path) as image:
        assert image.engine.warnings
        assert image.read() == content


def test_bad_footer_checksum_in_both_copies(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    poke(path, -FOOTER + 100, b"\x01")
    poke(path, 100, b"\x01")
    with pytest.raises(ChecksumError):
        open_read_all(path)


def test_bad_dynamic_header_checksum(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    poke(path, SECTOR + 800, b"\x01")  # a reserved byte of the dynamic header
    with pytest.raises(ChecksumError):
        open_read_all(path)


def test_bat_entry_past_the_end(dynamic_image: tuple[Path, bytes], qemu_img: str) -> None:
    path, content = dynamic_image
    table = header_of(path).table_offset
    poke(path, table + 4, (0x100000).to_bytes(4, "big"))  # block 1 at 512 MiB: past the end
    with ds.open(path) as image:  # open works
        assert image.pread(0, 2 * MiB) == content[: 2 * MiB]  # block 0 is fine
        for offset, length in [(2 * MiB, 100), (2 * MiB - 50, 100), (3 * MiB, 4096), (0, 4 * MiB)]:
            image.seek(offset)
            with pytest.raises(CorruptError):
                image.read(length)
        result = image.engine.check()
        assert any("block 1" in c for c in result.corruptions)
        with pytest.raises(ReadOnlyError):
            image.engine.check(repair=True)
    with ds.open(path, "r+") as image:
        result = image.engine.check(repair=True)
        assert result.repaired
    with ds.open(path) as image:
        assert image.engine.check().clean
        expected = content[: 2 * MiB] + bytes(image.size - 2 * MiB)  # block 1 is gone
        assert image.read() == expected
    assert qemu_raw(qemu_img, path) == expected


def test_bat_entry_past_the_end_refuses_writes(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    poke(path, header_of(path).table_offset + 4, (0x100000).to_bytes(4, "big"))
    with ds.open(path, "r+") as image:  # found as the BAT is loaded: no write until check -r
        image.seek(2 * MiB + 10)
        with pytest.raises(ReadOnlyError, match="corrupt .*block 1"):
            image.write(b"data")


def test_overlapping_blocks_are_reported(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    table = header_of(path).table_offset
    first = path.read_bytes()[table : table + 4]
    poke(path, table + 8, first)  # block 2 shares block 0's place
    with ds.open(path) as image:
        assert any("overlap" in c for c in image.engine.check().corruptions)


def test_huge_max_table_entries_fails_fast(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    patch_header(path, max_table_entries=1_000_000_000)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CorruptError):
            open_read_all(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 16 * MiB


HUGE_BAT_PROBE = """
import resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import diskspec.runtime as ds
from diskspec.runtime.errors import DiskspecError
tracemalloc.start()
start = time.perf_counter()
try:
    with ds.open(sys.argv[1]) as image:
        image.read(4096)
    outcome = "opened"
except DiskspecError as exc:
    outcome = type(exc).__name__
except MemoryError:
    outcome = "MemoryError"
print(outcome, time.perf_counter() - start, tracemalloc.get_traced_memory()[1])
"""


def test_huge_max_table_entries_in_a_sparse_file_is_bounded(dynamic_image: tuple[Path, bytes]) -> None:
    """The same claim of a billion entries, in a (sparse) file large enough to hold them: the
    open must still be quick and small (the disk needs 6 entries) -- or a CorruptError."""
    path, _ = dynamic_image
    patch_header(path, max_table_entries=1_000_000_000)
    footer = path.read_bytes()[-FOOTER:]
    with open(path, "r+b") as f:
        f.truncate(4_000_010_240)
        f.seek(4_000_010_240)
        f.write(footer)
    proc = subprocess.run([sys.executable, "-c", HUGE_BAT_PROBE, str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    outcome, elapsed, peak = proc.stdout.split()
    assert outcome in ("CorruptError", "opened"), proc.stdout
    assert float(elapsed) < 1.0, f"open took {float(elapsed):.1f} s"
    assert int(peak) < 64 * MiB, f"open allocated {int(peak) / MiB:.0f} MiB"


@pytest.mark.parametrize("data_offset", [1 << 40, 0xFFFFFFFFFFFFFFFF, 513, "end-600"])
def test_dynamic_header_offset_outside_the_file(dynamic_image: tuple[Path, bytes],
                                                data_offset: int | str) -> None:
    path, _ = dynamic_image
    at = path.stat().st_size - 600 if data_offset == "end-600" else data_offset
    patch_footer(path, data_offset=at)
    with pytest.raises(CorruptError):
        open_read_all(path)


@pytest.mark.parametrize("fields", [
    {"table_offset": 1 << 40}, {"table_offset": 1537}, {"block_size": 3000}, {"block_size": 0},
    {"max_table_entries": 1},
], ids=["table-past-end", "table-unaligned", "block-size-3000", "block-size-0", "bat-too-short"])
def test_bad_dynamic_header_fields(dynamic_image: tuple[Path, bytes], fields: dict[str, int]) -> None:
    path, _ = dynamic_image
    patch_header(path, **fields)
    with pytest.raises(CorruptError):
        open_read_all(path)


# -- 9. check, repair and resize ------------------------------------------------------------------


def test_check_clean_images(tmp_path: Path, make_image: Callable[..., Path]) -> None:
    qemu_made = make_image("vpc", "10M", "subformat=dynamic",
                           writes=[("0x1", 0, 1), ("0x2", 5 * MiB, 3 * MiB)])
    fixed = tmp_path / "fixed.vhd"
    ds.create(fixed, "vpc", 4 * MiB, subformat="fixed").close()
    dyn = tmp_path / "dyn.vhd"
    with ds.create(dyn, "vpc", 6 * MiB, block_size=512 * KiB) as image:
        random_writes(image, bytearray(image.size), random.Random(1), 8)
    child = tmp_path / "child.vhd"
    with ds.create(child, "vpc", None, subformat="differencing", parent=dyn) as image:
        random_writes(image, bytearray(image.size), random.Random(2), 8)
    for path in (qemu_made, fixed, dyn, child):
        with ds.open(path) as image:
            result = image.engine.check()
            assert result.clean, (path.name, result)
            assert not image.engine.warnings


@pytest.mark.parametrize("where", ["copy", "end"])
def test_check_repairs_a_damaged_footer(dynamic_image: tuple[Path, bytes], qemu_img: str,
                                        where: str) -> None:
    path, content = dynamic_image
    poke(path, 100 if where == "copy" else -FOOTER + 100, b"\x01")
    with ds.open(path) as image:
        assert image.engine.warnings
        result = image.engine.check()
        assert result.corruptions and not result.clean
    with ds.open(path, "r+") as image:
        assert image.engine.check(repair=True).repaired
    with ds.open(path) as image:
        assert not image.engine.warnings
        assert image.engine.check().clean
        assert image.read() == content
    data = path.read_bytes()
    assert data[:FOOTER] == data[-FOOTER:] and vhd.Footer.verify_buffer(data[-FOOTER:])
    assert qemu_raw(qemu_img, path) == content


def resize_and_compare(path: Path, shadow: bytearray, new_size: int, qemu_img: str) -> int:
    with ds.open(path, "r+") as image:
        image.engine.resize(new_size)
        size = image.size
        assert size >= new_size
    if size > len(shadow):
        shadow.extend(bytes(size - len(shadow)))
    else:
        del shadow[size:]
    with ds.open(path) as image:
        assert image.size == size
        assert sha(image.read()) == sha(shadow)
        assert not image.engine.check().corruptions
    assert qemu_info(qemu_img, path)["virtual-size"] == size
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)
    return size


RESIZABLE = [
    pytest.param("fixed", {}, id="fixed"),
    pytest.param("dynamic", {}, id="dynamic"),
    pytest.param("dynamic", {"block_size": 512 * KiB}, id="dynamic-512K"),
    pytest.param("fixed", {"force_size": True}, id="fixed-force_size"),
]


@pytest.mark.parametrize("subformat,options", RESIZABLE)
def test_resize_grow_and_shrink(tmp_path: Path, qemu_img: str, subformat: str,
                                options: dict[str, Any]) -> None:
    path = tmp_path / "r.vhd"
    rng = random.Random(subformat + repr(options))
    with ds.create(path, "vpc", 10 * MiB, subformat=subformat, **options) as image:
        shadow = bytearray(image.size)
        for offset in (0, 3 * MiB + 7, 6 * MiB - 5, 9 * MiB + 1):
            write_both(image, shadow, offset, rng.randbytes(1000))
    size = resize_and_compare(path, shadow, 20 * MiB, qemu_img)  # grow
    assert size >= 20 * MiB
    # shrink over a part never written; cut data reads as zeros when grown again
    resize_and_compare(path, shadow, 9 * MiB + 5000, qemu_img)
    # a grow that needs a longer BAT (over a sector of entries with 512 KiB blocks)
    size = resize_and_compare(path, shadow, 100 * MiB, qemu_img)
    with ds.open(path, "r+") as image:
        write_both(image, shadow, size - 5000, rng.randbytes(5000))
        write_both(image, shadow, 50 * MiB, rng.randbytes(5000))
    # shrinking over data is refused and changes nothing
    before = path.read_bytes()
    for target in (60 * MiB, 12 * MiB, 9 * MiB):
        with ds.open(path, "r+") as image, pytest.raises(DiskspecError):
            image.engine.resize(target)
    assert path.read_bytes() == before
    assert sha(ds_read(path)) == sha(shadow)
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)


@pytest.mark.parametrize("subformat,options", RESIZABLE)
def test_resize_shrink_over_zeroed_data(tmp_path: Path, qemu_img: str, subformat: str,
                                        options: dict[str, Any]) -> None:
    """Shrinking is refused only where data would be lost: a region that was written and then
    zeroed again holds no data."""
    path = tmp_path / "z.vhd"
    with ds.create(path, "vpc", 10 * MiB, subformat=subformat, **options) as image:
        shadow = bytearray(image.size)
        write_both(image, shadow, MiB, b"keep" * 1000)
        write_both(image, shadow, 8 * MiB, b"gone" * 1000)
        write_both(image, shadow, 8 * MiB, bytes(4000))
    resize_and_compare(path, shadow, 4 * MiB, qemu_img)


def test_resize_differencing_image(tmp_path: Path) -> None:
    """Growing a child far enough to move its locator areas out of the BAT's way: either refused
    up front, or the child stays consistent (check finds no corruption) and opens by itself."""
    parent, content = make_parent("vhd-dynamic", tmp_path)
    child = tmp_path / "child.vhd"
    rng = random.Random(11)
    with ds.create(child, "vpc", None, subformat="differencing", parent=parent,
                   block_size=512 * KiB) as image:
        shadow = bytearray(content)
        random_writes(image, shadow, rng, 6)
        try:
            image.engine.resize(300 * MiB)
        except DiskspecError:
            return  # refused: fine
        shadow.extend(bytes(image.size - len(shadow)))
    with ds.open(child, parent=parent) as image:
        assert sha(image.read()) == sha(shadow)
        result = image.engine.check()
        assert not result.corruptions, result.corruptions
    with ds.open(child) as image:  # the resized child still finds its parent
        assert sha(image.read()) == sha(shadow)
