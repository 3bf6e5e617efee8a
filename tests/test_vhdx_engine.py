"""The VHDX engine against independent oracles.

Oracles: qemu-img/qemu-io (images qemu makes and writes must read the same through diskspec;
images diskspec makes and writes must pass `qemu-img check` and read the same through
`qemu-img convert -f vhdx`; qemu's own log replay, `qemu-img check -r all`, must agree with
ours), libvhdi (pyvhdi) for every image diskspec writes, differencing ones included, and a raw
shadow file for everything. qemu-img cannot open a differencing VHDX at all (ENOTSUP), so
differencing images are checked through libvhdi, the shadow and engine.check().

qemu 7.2 `qemu-img create -f vhdx` has no logical_sector_size option (it always writes 512), so
4 KiB-sector images are made with diskspec. qemu 7.2 cannot read them either: since QEMU 5.2
(commit "block/vhdx: Support vhdx image only with 512 bytes logical sector size") vhdx_open
refuses any logical sector size but 512 with ENOTSUP. So 4 KiB-sector images are checked with
libvhdi, the shadow and engine.check(), and the tests assert that qemu refuses them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import crc32c
import pytest

import diskspec.runtime as ds
from diskspec.formats import vhdx
from diskspec.runtime.backend import FileBackend
from diskspec.runtime.engines.vhdx.engine import VhdxEngine
from diskspec.runtime.errors import (
    CorruptError,
    DiskspecError,
    NotThisFormatError,
    ParentMissingError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from diskspec.runtime.extent import State

from .conftest import require_tool, run
from .shadow import ds_read, sha, write_both

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
HEADER_SLOTS = (64 * KiB, 128 * KiB)
REGION_SLOTS = (192 * KiB, 256 * KiB)
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
FULLY_PRESENT = 6


# -- oracles and helpers -------------------------------------------------------------------


def vhdx_engine(image: ds.Image) -> VhdxEngine:
    """The image's engine, as the VHDX engine whose internals these tests read."""
    assert isinstance(image.engine, VhdxEngine)
    return image.engine


def qemu_raw(qemu_img: str, path: Path) -> bytes:
    """The guest content as qemu reads it."""
    out = path.with_name(path.name + ".qemu.raw")
    run(qemu_img, "convert", "-f", "vhdx", "-O", "raw", str(path), str(out))
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def qemu_check(qemu_img: str, path: Path) -> None:
    """`qemu-img check` must exit 0 (no corruption, no leak, no error)."""
    proc = subprocess.run([qemu_img, "check", "-f", "vhdx", str(path)], capture_output=True, text=True,
                          check=False)
    out = (proc.stdout + proc.stderr)[:2000]
    assert proc.returncode == 0, f"qemu-img check {path.name}: rc {proc.returncode}: {out}"


def qemu_fails(*args: str) -> str:
    """qemu-img with `args` must fail; returns its error text."""
    proc = subprocess.run([require_tool("qemu-img"), *args], capture_output=True, text=True, check=False)
    assert proc.returncode != 0, f"qemu-img {' '.join(args)} unexpectedly worked"
    return proc.stderr


def qemu_reads(lss: int = 512, differencing: bool = False) -> bool:
    """Whether qemu 7.2 can open the image at all (512-byte sectors, no parent)."""
    return lss == 512 and not differencing


def assert_qemu_refuses(qemu_img: str, path: Path) -> None:
    err = qemu_fails("info", "-f", "vhdx", str(path))
    assert "not supported" in err.lower(), err


def qemu_replayed(qemu_img: str, path: Path) -> bytes:
    """qemu's own log replay (`qemu-img check -r all`) on a copy, then qemu's read of it."""
    copy = path.with_name(path.name + ".qemu-replay")
    shutil.copyfile(path, copy)
    try:
        run(qemu_img, "check", "-q", "-r", "all", "-f", "vhdx", str(copy))
        return qemu_raw(qemu_img, copy)
    finally:
        copy.unlink()


def qemu_info(qemu_img: str, path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(run(qemu_img, "info", "--output=json", "-f", "vhdx", str(path)))
    return info


def qemu_write(qemu_io: str, path: Path, writes: list[tuple[int, int, int]]) -> None:
    """qemu-io `write -P pattern offset length` for each (pattern, offset, length), one run."""
    args = [qemu_io, "-f", "vhdx"]
    for pattern, offset, length in writes:
        args += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    run(*args, str(path))


@pytest.fixture(scope="session")
def pyvhdi() -> Any:
    try:
        return importlib.import_module("pyvhdi")
    except ImportError:
        pytest.fail("pyvhdi is not installed (pip install libvhdi-python; it is in the test extras)")


def vhdi_read(pyvhdi: Any, path: Path, parent: Path | None = None) -> tuple[int, bytes]:
    """(media size, guest content) as libvhdi reads them; a differencing image needs its parent
    handed over with set_parent (libvhdi does not follow the locator by itself)."""
    f = pyvhdi.file()
    f.open(str(path))
    p = None
    try:
        if parent is not None:
            p = pyvhdi.file()
            p.open(str(parent))
            f.set_parent(p)
        size = f.get_media_size()
        return size, f.read_buffer_at_offset(size, 0)
    finally:
        f.close()
        if p is not None:
            p.close()


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def peek(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def edge_writes(size: int, block: int, sector: int = 512) -> list[tuple[int, int]]:
    """(offset, length) at unaligned offsets, across block boundaries and in the last sector."""
    out = [(0, 1), (511, 2), (block - 1000, 3000), (2 * block - 7, 14), (12345, 100_000),
           (3 * block - 3, block + 6), (size - sector, sector), (size - 1, 1), (size - 700, 300),
           (size - sector + 5, 100)]
    return [(o, n) for o, n in out if o >= 0 and o + n <= size]


def random_writes(image: ds.Image, shadow: bytearray, rng: random.Random, count: int,
                  longest: int = 300_000) -> None:
    for _ in range(count):
        offset = rng.randrange(image.size)
        length = min(rng.choice([1, 511, 512, 513, 4096, 4097, rng.randrange(1, longest)]),
                     image.size - offset)
        write_both(image, shadow, offset, rng.randbytes(length))


def assert_extents_match(path: Path, content: bytes, parent_content: bytes | None = None,
                         **kwargs: Any) -> None:
    """extents() covers the disk in order; ZERO reads zero, DATA is at file_offset, BACKING is
    the parent's."""
    with ds.open(path, **kwargs) as image, open(path, "rb") as raw:
        pos = 0
        for e in image.extents():
            assert e.offset == pos and e.length > 0
            want = content[e.offset : e.end]
            if e.state is State.ZERO:
                assert not any(want), f"ZERO extent {e} holds data"
            elif e.state is State.DATA:
                assert e.file_offset is not None
                raw.seek(e.file_offset)
                assert raw.read(e.length) == want, f"DATA extent {e}"
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


def open_read_all(path: Path, mode: str = "r", **kwargs: Any) -> bytes:
    with time_limit(5), ds.open(path, mode, **kwargs) as image:
        return image.read()


def file_state(path: Path) -> tuple[int, int, int, str]:
    st_ = path.stat()
    return st_.st_mtime_ns, st_.st_ctime_ns, st_.st_size, sha(path.read_bytes())


def age(path: Path) -> None:
    """Set the file times an hour back, so that any write would show in the mtime."""
    past = time.time() - 3600
    os.utime(path, (past, past))


# -- the on-disk structures, read and patched with the codecs -----------------------------------


def header_at(path: Path, slot: int) -> vhdx.Header:
    raw = peek(path, HEADER_SLOTS[slot], vhdx.Header.SIZE)
    return vhdx.Header.parse(raw)


def current_header(path: Path) -> vhdx.Header:
    valid = []
    for slot in (0, 1):
        raw = peek(path, HEADER_SLOTS[slot], vhdx.Header.SIZE)
        if vhdx.Header.verify_buffer(raw):
            valid.append((vhdx.Header.parse(raw).sequence_number, -slot, vhdx.Header.parse(raw)))
    assert valid, "no valid header"
    return max(valid, key=lambda v: v[:2])[2]


def put_header(path: Path, **fields: Any) -> vhdx.Header:
    """The current header with `fields` changed, written (checksummed) into both slots."""
    header = current_header(path)
    for name, value in fields.items():
        setattr(header, name, value)
    for at in HEADER_SLOTS:
        header.sequence_number += 1
        poke(path, at, header.update_checksum().build())
    return header


def region_table(path: Path, copy: int = 0) -> vhdx.RegionTable:
    return vhdx.RegionTable.parse(peek(path, REGION_SLOTS[copy], 64 * KiB))


def put_region_table(path: Path, table: vhdx.RegionTable, copies: tuple[int, ...] = (0, 1)) -> None:
    table.entry_count = len(table.entries)
    table.reserved_tail = bytes(64 * KiB - 16 - 32 * len(table.entries))
    raw = table.update_checksum().build()
    for copy in copies:
        poke(path, REGION_SLOTS[copy], raw)


def region(path: Path, guid: bytes) -> vhdx.RegionTableEntry:
    return next(e for e in region_table(path).entries if e.guid == guid)


def metadata_table(path: Path) -> tuple[int, vhdx.MetadataTable]:
    at = region(path, METADATA_GUID).file_offset
    return at, vhdx.MetadataTable.parse(peek(path, at, 64 * KiB))


def put_metadata_table(path: Path, table: vhdx.MetadataTable) -> None:
    at = region(path, METADATA_GUID).file_offset
    table.header.entry_count = len(table.entries)
    table.reserved_tail = bytes(64 * KiB - 32 - 32 * len(table.entries))
    poke(path, at, table.build())


def metadata_item(path: Path, item: bytes) -> tuple[int, bytes]:
    """(file offset, payload) of a metadata item."""
    at, table = metadata_table(path)
    e = next(e for e in table.entries if e.item_id == item)
    return at + e.offset, peek(path, at + e.offset, e.length)


def bat_entry_at(path: Path, index: int) -> int:
    """The file offset of BAT entry `index`."""
    return region(path, BAT_GUID).file_offset + 8 * index


def payload_index(block: int, block_size: int, lss: int = 512) -> int:
    cr = (1 << 23) * lss // block_size
    return block + block // cr


def new_guid() -> bytes:
    return uuid.uuid4().bytes_le


def log_entry(sequence: int, tail: int, log_guid: bytes, writes: list[tuple[int, bytes | int]],
              flushed: int, last: int) -> bytearray:
    """A log entry built from the codecs: (file offset, 4 KiB page) makes a data descriptor and
    its data sector, (file offset, length) a zero descriptor."""
    count = len(writes)
    desc_area = -(-(64 + 32 * count) // 4096) * 4096
    pages = [w for w in writes if not isinstance(w[1], int)]
    out = bytearray(desc_area + 4096 * len(pages))
    out[:64] = vhdx.LogEntryHeader.new(entry_length=len(out), tail=tail, sequence_number=sequence,
                                       descriptor_count=count, log_guid=log_guid,
                                       flushed_file_offset=flushed, last_file_offset=last).build()
    data_at = desc_area
    for i, (file_offset, what) in enumerate(writes):
        if isinstance(what, int):
            d = vhdx.ZeroDescriptor.new(zero_length=what, file_offset=file_offset,
                                        sequence_number=sequence).build()
        else:
            assert len(what) == 4096
            d = vhdx.DataDescriptor.new(trailing_bytes=what[4092:], leading_bytes=what[:8],
                                        file_offset=file_offset, sequence_number=sequence).build()
            out[data_at : data_at + 4096] = vhdx.DataSector.new(
                sequence_high=sequence >> 32, data=what[8:4092], sequence_low=sequence & 0xFFFFFFFF).build()
            data_at += 4096
        out[64 + 32 * i : 96 + 32 * i] = d
    reseal(out)
    return out


def reseal(entry: bytearray) -> bytearray:
    entry[4:8] = vhdx.LogEntryHeader.checksum_of(bytes(entry)).to_bytes(4, "little")
    return entry


# -- crashes ------------------------------------------------------------------------------------


class Crash(Exception):
    """The simulated power cut."""


def abandon(image: ds.Image) -> None:
    """Simulate a crash: the engine's descriptor is closed as it is, nothing more is written
    (no flush, no clean header) -- then the Image object is retired harmlessly."""
    engine = vhdx_engine(image)
    backend = engine.file_backend
    assert isinstance(backend, FileBackend)
    os.close(backend.fd)
    backend.fd = -1
    backend.writable = False
    engine.session_started = False
    image.close()


def crash_in_log_write(image: ds.Image, offset: int, data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write `data` (into unallocated space): its metadata update stops after the log entry is
    written and flushed, before it is applied; the image is abandoned there."""
    original = VhdxEngine.log_and_apply

    def log_then_crash(self: VhdxEngine, pages: list[tuple[int, bytes]]) -> None:
        def barrier() -> None:  # the flush right after the log entry, then the power cut
            self.file_backend.flush()
            raise Crash

        self.barrier = barrier  # type: ignore[method-assign]
        original(self, pages)

    with monkeypatch.context() as m:
        m.setattr(VhdxEngine, "log_and_apply", log_then_crash)
        image.seek(offset)
        with pytest.raises(Crash):
            image.write(data)
    abandon(image)


# -- 1. qemu-img differential ---------------------------------------------------------------------

QEMU_IMAGES = [
    pytest.param("block_size=1M,block_state_zero=on", "20M", id="dynamic-1M-zero-on"),
    pytest.param("block_size=1M,block_state_zero=off", "20M", id="dynamic-1M-zero-off"),
    # default block size (8 MiB up to 1 GiB); a disk that ends inside a block
    pytest.param("block_state_zero=on", str(40 * MiB + 3 * 512), id="dynamic-default-zero-on"),
    pytest.param("block_state_zero=off", str(40 * MiB + 3 * 512), id="dynamic-default-zero-off"),
    pytest.param("subformat=fixed,block_size=1M", "12M", id="fixed-1M"),
    pytest.param("subformat=fixed", "20M", id="fixed-default"),  # the last block is partial
]


def qemu_patterned(make_image: Callable[..., Path], qemu_img: str, qemu_io: str, options: str,
                   size: str) -> tuple[Path, int, int]:
    path = make_image("vhdx", size, options)
    info = qemu_info(qemu_img, path)
    virtual, block = info["virtual-size"], info["cluster-size"]
    writes = [(0x11 + 0x11 * i % 0xEE, o, n) for i, (o, n) in enumerate(edge_writes(virtual, block))]
    qemu_write(qemu_io, path, writes)
    return path, virtual, block


@pytest.mark.parametrize("options,size", QEMU_IMAGES)
def test_qemu_made_image_reads_identically(make_image: Callable[..., Path], qemu_img: str,
                                           qemu_io: str, pyvhdi: Any, options: str, size: str) -> None:
    path, virtual, block = qemu_patterned(make_image, qemu_img, qemu_io, options, size)
    reference = qemu_raw(qemu_img, path)
    assert len(reference) == virtual
    with ds.open(path) as image:
        assert image.format == "vhdx"
        assert image.size == virtual
        assert vhdx_engine(image).block_size == block
        assert not image.engine.warnings
        content = image.read()
        for offset, length in [(510, 5), (block - 3, 6), (virtual - 1, 1), (virtual - 513, 600)]:
            assert image.pread(offset, length) == reference[offset : offset + length]
        data = image.engine.info()["format-specific"]["data"]
        assert data["subformat"] == ("fixed" if "fixed" in options else "dynamic")
    assert sha(content) == sha(reference)
    assert vhdi_read(pyvhdi, path) == (virtual, reference)
    assert_extents_match(path, reference)


@pytest.mark.parametrize("options,size", QEMU_IMAGES)
def test_diskspec_writes_into_qemu_made_image(make_image: Callable[..., Path], qemu_img: str,
                                              qemu_io: str, pyvhdi: Any, options: str, size: str) -> None:
    path, virtual, block = qemu_patterned(make_image, qemu_img, qemu_io, options, size)
    shadow = bytearray(qemu_raw(qemu_img, path))
    rng = random.Random(options)
    with ds.open(path, "r+") as image:
        for offset, length in edge_writes(virtual, block):
            write_both(image, shadow, offset + 3 if offset + length + 3 <= virtual else offset,
                       rng.randbytes(length))
        random_writes(image, shadow, rng, 10)
    qemu_check(qemu_img, path)
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)
    assert vhdi_read(pyvhdi, path) == (virtual, bytes(shadow))
    assert sha(ds_read(path)) == sha(shadow)
    with ds.open(path) as image:
        assert image.engine.check().clean


def sparse_digest(pieces: Iterator[tuple[int, bytes]], size: int) -> str:
    """sha256 over (offset, bytes) of every non-zero 1 MiB piece, then the size: equal for two
    disks exactly when their contents are equal, without hashing gigabytes of zeros."""
    h = hashlib.sha256()
    zero = bytes(MiB)
    for offset, piece in pieces:
        if piece != zero[: len(piece)]:
            h.update(offset.to_bytes(8, "little") + piece)
    h.update(size.to_bytes(8, "little"))
    return h.hexdigest()


def ds_pieces(path: Path) -> tuple[Iterator[tuple[int, bytes]], int]:
    image = ds.open(path)
    size = image.size

    def gen() -> Iterator[tuple[int, bytes]]:
        with image:
            buf = bytearray(64 * MiB)
            pos = 0
            while (n := image.readinto(buf)) > 0:
                for i in range(0, n, MiB):
                    yield pos + i, bytes(buf[i : min(n, i + MiB)])
                pos += n

    return gen(), size


def raw_pieces(path: Path) -> Iterator[tuple[int, bytes]]:
    """The 1 MiB pieces of a sparse raw file that hold data (holes read as zero)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces: set[int] = set()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pieces.update(range(start // MiB, (end - 1) // MiB + 1))
            pos = end
        for p in sorted(pieces):
            yield p * MiB, os.pread(fd, min(MiB, size - p * MiB), p * MiB)
    finally:
        os.close(fd)


def test_qemu_image_across_a_chunk_boundary(make_image: Callable[..., Path], qemu_img: str,
                                            qemu_io: str) -> None:
    """A chunk is 2^23 sectors (4 GiB at 512-byte sectors): only a disk past 4 GiB has a sector
    bitmap entry in the middle of its BAT. Whole-disk sha256 of 4 GiB costs seconds, so both
    sides are compared by a sparse digest (sha256 of every non-zero 1 MiB piece with its offset)."""
    chunk = 4 * GiB
    size = chunk + 8 * MiB + 512
    path = make_image("vhdx", str(size), "block_size=1M")
    writes = [(0x22, chunk - MiB - 3, 2 * MiB + 6), (0x21, chunk - 5000, 10_000), (0x23, chunk + 4 * MiB, 1),
              (0x24, size - 512, 512), (0x25, 1000, 3000)]
    qemu_write(qemu_io, path, writes)
    qemu_out = path.with_name("chunk.raw")
    run(qemu_img, "convert", "-f", "vhdx", "-O", "raw", str(path), str(qemu_out))
    pieces, ds_size = ds_pieces(path)
    assert ds_size == size
    assert sparse_digest(pieces, size) == sparse_digest(raw_pieces(qemu_out), size)
    with ds.open(path) as image:
        assert image.pread(chunk - 5003, 10_006) == b"\x22\x22\x22" + b"\x21" * 10_000 + b"\x22\x22\x22"
    # and diskspec writes across the boundary (allocating on both sides of the bitmap entry)
    rng = random.Random(4)
    shadow_writes = [(chunk - 700, rng.randbytes(MiB + 1400)), (chunk + 6 * MiB - 1, rng.randbytes(2)),
                     (size - 3, rng.randbytes(3))]
    with ds.open(path, "r+") as image:
        for offset, data in shadow_writes:
            image.seek(offset)
            image.write(data)
    qemu_check(qemu_img, path)
    qemu_out.unlink()
    run(qemu_img, "convert", "-f", "vhdx", "-O", "raw", str(path), str(qemu_out))
    pieces, _ = ds_pieces(path)
    assert sparse_digest(pieces, size) == sparse_digest(raw_pieces(qemu_out), size)
    with open(qemu_out, "rb") as f:
        for offset, data in shadow_writes:
            f.seek(offset)
            assert f.read(len(data)) == data
    qemu_out.unlink()


OUR_IMAGES = [
    pytest.param("dynamic", {"block_size": MiB}, id="dynamic-1M"),
    pytest.param("dynamic", {}, id="dynamic-auto"),
    pytest.param("dynamic", {"block_size": 2 * MiB, "block_state_zero": True}, id="dynamic-2M-zero"),
    pytest.param("dynamic", {"block_size": 32 * MiB, "log_size": 2 * MiB}, id="dynamic-32M-log2M"),
    pytest.param("fixed", {"block_size": MiB}, id="fixed-1M"),
    pytest.param("fixed", {}, id="fixed-auto"),
    pytest.param("dynamic", {"block_size": MiB, "logical_sector_size": 4096, "physical_sector_size": 4096},
                 id="dynamic-4K-sectors"),
    pytest.param("fixed", {"block_size": 2 * MiB, "logical_sector_size": 4096}, id="fixed-4K-sectors"),
    pytest.param("dynamic", {"block_size": MiB, "physical_sector_size": 4096}, id="dynamic-512e"),
]


@pytest.mark.parametrize("subformat,options", OUR_IMAGES)
def test_created_image_passes_qemu_check_and_reads_identically(
        tmp_path: Path, qemu_img: str, pyvhdi: Any, subformat: str, options: dict[str, Any]) -> None:
    path = tmp_path / "ours.vhdx"
    lss = options.get("logical_sector_size", 512)
    rng = random.Random(subformat + repr(options))
    with ds.create(path, "vhdx", 10 * MiB + 3 * 4096, subformat=subformat, **options) as image:
        size = image.size
        shadow = bytearray(size)
        for offset, length in edge_writes(size, vhdx_engine(image).block_size, lss):
            write_both(image, shadow, offset, rng.randbytes(length))
        random_writes(image, shadow, rng, 12)
    assert size == 10 * MiB + 3 * 4096
    if qemu_reads(lss):
        qemu_check(qemu_img, path)
        assert qemu_info(qemu_img, path)["virtual-size"] == size
        assert sha(qemu_raw(qemu_img, path)) == sha(shadow)
    else:
        assert_qemu_refuses(qemu_img, path)
    assert vhdi_read(pyvhdi, path) == (size, bytes(shadow))
    f = pyvhdi.file()
    f.open(str(path))
    try:
        assert f.get_bytes_per_sector() == lss
    finally:
        f.close()
    assert sha(ds_read(path)) == sha(shadow)
    assert_extents_match(path, bytes(shadow))
    with ds.open(path) as image:
        assert image.engine.check().clean
        assert not image.engine.warnings
        assert vhdx_engine(image).logical_sector == lss
        assert image.engine.info()["format-specific"]["data"]["subformat"] == subformat


def test_qemu_cannot_make_4k_sector_images(tmp_path: Path, qemu_img: str) -> None:
    """Why the 4 KiB-sector images above are diskspec's: qemu 7.2 has no such create option
    (and refuses to open them: see the module docstring)."""
    err = qemu_fails("create", "-f", "vhdx", "-o", "logical_sector_size=4096", str(tmp_path / "x.vhdx"), "8M")
    assert "logical_sector_size" in err


def make_vhdx_parent(path: Path, size: int = 6 * MiB, lss: int = 512, seed: int = 0) -> bytes:
    with ds.create(path, "vhdx", size, block_size=MiB, logical_sector_size=lss) as image:
        shadow = bytearray(image.size)
        random_writes(image, shadow, random.Random(seed), 6)
    return bytes(shadow)


def child_workload(child: ds.Image, shadow: bytearray, rng: random.Random) -> None:
    """Partial sectors at block edges (sector bitmaps), whole blocks (fully present), runs over
    allocated and unallocated blocks."""
    bs = vhdx_engine(child).block_size
    for offset, length in [(bs - 3, 7), (100, 10), (bs + 511, 2), (2 * bs, bs), (bs // 2, 2 * bs),
                           (child.size - 1, 1), (child.size - 600, 400), (3 * bs + 17, 1)]:
        if offset + length <= child.size:
            write_both(child, shadow, offset, rng.randbytes(length))
    random_writes(child, shadow, rng, 10, longest=700_000)


@pytest.mark.parametrize("lss", [512, 4096])
def test_differencing_reads_identically_through_libvhdi(tmp_path: Path, qemu_img: str, pyvhdi: Any,
                                                        lss: int) -> None:
    parent = tmp_path / "parent.vhdx"
    content = make_vhdx_parent(parent, lss=lss)
    child = tmp_path / "child.vhdx"
    shadow = bytearray(content)
    with ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB,
                   logical_sector_size=lss) as image:
        assert image.read() == content  # a fresh child reads as its parent
        child_workload(image, shadow, random.Random(lss))
    assert sha(ds_read(child)) == sha(shadow)
    assert vhdi_read(pyvhdi, child, parent) == (len(shadow), bytes(shadow))
    with ds.open(child) as image:
        assert image.engine.check().clean
        states = image.engine.info()["format-specific"]["data"]["block-states"]
        assert states.get("partially_present") and states.get("fully_present"), states
    assert_extents_match(child, bytes(shadow), content)
    # qemu cannot read a differencing VHDX at all
    err = qemu_fails("convert", "-f", "vhdx", "-O", "raw", str(child), str(tmp_path / "x.raw"))
    assert "differencing" in err.lower() or "not supported" in err.lower(), err


def test_create_differencing_of_another_size_is_refused_first(tmp_path: Path) -> None:
    """A child of another size than its parent could never be opened over it: refused, with
    the sizes named, before any file is made."""
    parent = tmp_path / "parent.vhdx"
    ds.create(parent, "vhdx", 8 * MiB).close()
    child = tmp_path / "child.vhdx"
    with pytest.raises(DiskspecError, match=rf"parent's size \({8 * MiB} bytes\), not {16 * MiB}"):
        ds.create(child, "vhdx", 16 * MiB, subformat="differencing", parent=parent)
    assert not child.exists()
    with ds.create(child, "vhdx", 8 * MiB, subformat="differencing", parent=parent) as image:
        assert image.size == 8 * MiB and image.backing is not None


def test_differencing_chain_reads_identically_through_libvhdi(tmp_path: Path, pyvhdi: Any) -> None:
    base = tmp_path / "base.vhdx"
    shadow = bytearray(make_vhdx_parent(base))
    rng = random.Random(12)
    chain = [base]
    for i in range(2):
        link = tmp_path / f"link{i}.vhdx"
        with ds.create(link, "vhdx", None, subformat="differencing", parent=chain[-1],
                       block_size=MiB) as image:
            child_workload(image, shadow, rng)
        chain.append(link)
    with ds.open(chain[-1]) as image:
        assert [p.path.name for p in image.chain()] == [p.name for p in reversed(chain)]
        assert sha(image.read()) == sha(shadow)
    files: list[Any] = []  # pyvhdi file objects
    try:
        for p in chain:
            f = pyvhdi.file()
            f.open(str(p))
            if files:
                f.set_parent(files[-1])
            files.append(f)
        assert files[-1].read_buffer_at_offset(len(shadow), 0) == bytes(shadow)
    finally:
        for f in reversed(files):
            f.close()


def test_64_tib_image(tmp_path: Path, qemu_img: str, qemu_io: str) -> None:
    """The largest virtual size (64 TiB, auto block size 64 MiB): written at both ends."""
    path = tmp_path / "huge.vhdx"
    size = 64 << 40
    with ds.create(path, "vhdx", size) as image:
        assert vhdx_engine(image).block_size == 64 * MiB
        image.seek(size - 512)
        image.write(b"z" * 512)
        image.seek(0)
        image.write(b"a" * 700)
    qemu_check(qemu_img, path)
    assert qemu_info(qemu_img, path)["virtual-size"] == size
    run(qemu_io, "-f", "vhdx", "-c", f"read -P 0x7a {size - 512} 512", "-c", "read -P 0x61 0 700",
        "-c", f"read -P 0 700 {64 * MiB - 700}", str(path))
    with ds.open(path) as image:
        assert image.pread(size - 513, 600) == b"\0" + b"z" * 512
        assert image.pread(32 << 40, 100) == bytes(100)


@pytest.mark.parametrize("options", [
    {"size": (64 << 40) + 512}, {"block_size": 3 * MiB}, {"block_size": 512 * KiB},
    {"block_size": 512 * MiB}, {"log_size": 0}, {"log_size": 4 << 30}, {"logical_sector_size": 1024},
    {"physical_sector_size": 2048}, {"subformat": "sparse"},
    {"size": -512}, {"bogus_option": 1},  # size 0 and sizes off the sector: made as qemu does
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_create_rejects_bad_options(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "bad.vhdx"
    options = dict(options)
    size = options.pop("size", 8 * MiB)
    with pytest.raises(DiskspecError):
        ds.create(path, "vhdx", size, **options).close()
    assert not path.exists(), "a failed create left a file behind"


# -- 2. the log -----------------------------------------------------------------------------------

DIRTY_KINDS = ["dynamic", "dynamic-zero", "dynamic-4K", "differencing"]


def dirty_image(kind: str, d: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes, bytes]:
    """An image whose last write stopped after its log entry was flushed, before it was applied.
    Returns (path, content before that write, content with it)."""
    path = d / "dirty.vhdx"
    rng = random.Random(kind)
    if kind == "differencing":
        parent = d / "parent.vhdx"
        shadow = bytearray(make_vhdx_parent(parent))
        image = ds.create(path, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB)
    else:
        image = ds.create(path, "vhdx", 8 * MiB, block_size=MiB, block_state_zero="zero" in kind,
                          logical_sector_size=4096 if "4K" in kind else 512)
        shadow = bytearray(image.size)
    with image:
        write_both(image, shadow, 3000, rng.randbytes(5000))
    image = ds.open(path, "r+")
    write_both(image, shadow, MiB + 100, rng.randbytes(300))  # applied entries in the log too
    write_both(image, shadow, 2 * MiB + 4096, rng.randbytes(4096))
    before = bytes(shadow)
    data = rng.randbytes(4096 + 1000)
    crash_in_log_write(image, 5 * MiB + 4096, data, monkeypatch)
    shadow[5 * MiB + 4096 : 5 * MiB + 4096 + len(data)] = data
    return path, before, bytes(shadow)


@pytest.mark.parametrize("kind", DIRTY_KINDS)
def test_dirty_log_is_replayed_in_memory_read_only(tmp_path: Path, qemu_img: str,
                                                   monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    path, before, after = dirty_image(kind, tmp_path, monkeypatch)
    assert before != after
    assert not current_header(path).is_log_guid_zero
    age(path)
    state = file_state(path)
    for _ in range(2):
        with ds.open(path) as image:
            assert vhdx_engine(image).replayed >= 1
            assert any("in memory" in w for w in image.engine.warnings)
            assert sha(image.read()) == sha(after)
            assert image.pread(5 * MiB + 4096, 10) == after[5 * MiB + 4096 : 5 * MiB + 4106]
            result = image.engine.check()
            assert not result.corruptions, result
            with pytest.raises(ReadOnlyError):
                image.write(b"x")
    assert file_state(path) == state, "a read-only open changed the file"
    if qemu_reads(4096 if "4K" in kind else 512, kind == "differencing"):
        # qemu refuses the image read-only; its own replay (check -r all) agrees with ours
        assert "replayed" in qemu_fails("info", "-f", "vhdx", str(path))
        assert sha(qemu_replayed(qemu_img, path)) == sha(after)
    assert file_state(path) == state


@pytest.mark.parametrize("kind", DIRTY_KINDS)
def test_dirty_log_is_replayed_into_the_file_read_write(tmp_path: Path, qemu_img: str, pyvhdi: Any,
                                                        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    path, _, after = dirty_image(kind, tmp_path, monkeypatch)
    with ds.open(path, "r+") as image:
        assert vhdx_engine(image).replayed >= 1
        assert sha(image.read()) == sha(after)
    assert current_header(path).is_log_guid_zero, "the log is still marked in use after the replay"
    with ds.open(path) as image:
        assert vhdx_engine(image).replayed == 0
        assert sha(image.read()) == sha(after)
    # replayed and written on in one session: new allocations after the replayed ones
    shadow = bytearray(after)
    with ds.open(path, "r+") as image:
        write_both(image, shadow, 4 * MiB + 5, b"after the replay" * 100)
        write_both(image, shadow, 5 * MiB + 4096 + 10, b"over the replayed block")
    after = bytes(shadow)
    with ds.open(path) as image:
        assert vhdx_engine(image).replayed == 0
        assert sha(image.read()) == sha(after)
        assert image.engine.check().clean
    if kind == "differencing":
        assert vhdi_read(pyvhdi, path, tmp_path / "parent.vhdx") == (len(after), after)
        return
    assert vhdi_read(pyvhdi, path) == (len(after), after)
    if qemu_reads(4096 if "4K" in kind else 512):
        qemu_check(qemu_img, path)
        assert sha(qemu_raw(qemu_img, path)) == sha(after)


def test_replay_renews_the_file_write_guid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[MS-VHDX] 2.2.2 (vhdx.md 2.2): FileWriteGuid must change before the first modification of
    the file in a session, log replay included."""
    path, _, _ = dirty_image("dynamic", tmp_path, monkeypatch)
    old = current_header(path).file_write_guid
    ds.open(path, "r+").close()
    assert current_header(path).file_write_guid != old


def test_write_session_renews_guids_and_an_idle_session_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "g.vhdx"
    ds.create(path, "vhdx", 4 * MiB, block_size=MiB).close()
    age(path)
    state = file_state(path)
    ds.open(path, "r+").close()  # no change: the file is not touched
    assert file_state(path) == state
    old = current_header(path)
    with ds.open(path, "r+") as image:
        image.write(b"data")
    new = current_header(path)
    assert new.file_write_guid != old.file_write_guid
    assert new.data_write_guid != old.data_write_guid
    assert new.is_log_guid_zero and new.sequence_number > old.sequence_number
    assert header_at(path, 0).sequence_number != header_at(path, 1).sequence_number
    for slot in (0, 1):
        assert vhdx.Header.verify_buffer(peek(path, HEADER_SLOTS[slot], 4096))


def test_interrupted_session_without_log_entries_reopens(tmp_path: Path, qemu_img: str) -> None:
    """A fixed image is written in place: a session that is cut off (no clean close) leaves a
    header whose log GUID is set, with no log entry written under it. qemu opens such an image;
    so must diskspec -- the session start is a state every crash can leave behind."""
    path = tmp_path / "f.vhdx"
    ds.create(path, "vhdx", 4 * MiB, subformat="fixed", block_size=MiB).close()
    image = ds.open(path, "r+")
    image.write(b"x" * 5000)
    image.flush()
    abandon(image)
    assert sha(qemu_replayed(qemu_img, path)) == sha(b"x" * 5000 + bytes(4 * MiB - 5000))
    assert open_read_all(path)[:5001] == b"x" * 5000 + b"\0"
    assert open_read_all(path, "r+")[:5001] == b"x" * 5000 + b"\0"


def test_log_that_wraps_around(tmp_path: Path, qemu_img: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """More log entries than the 1 MiB log holds: entries wrap to the start, older valid entries of
    the same session stay behind them; the replay must take the newest sequence."""
    path = tmp_path / "w.vhdx"
    rng = random.Random(6)
    with ds.create(path, "vhdx", 160 * MiB, block_size=MiB) as image:
        shadow = bytearray(image.size)
        image.engine.barriers = False  # speed: the crash below is simulated, not real
        heads = []
        for block in range(140):
            write_both(image, shadow, block * MiB + 7, rng.randbytes(100))
            heads.append(vhdx_engine(image).log_head)
        assert any(b < a for a, b in zip(heads, heads[1:], strict=False)), "the log never wrapped"
        shadow_before = bytes(shadow)
        data = rng.randbytes(3000)
        image.engine.barriers = True
        crash_in_log_write(image, 150 * MiB + 1, data, monkeypatch)
    shadow[150 * MiB + 1 : 150 * MiB + 3001] = data
    assert shadow_before != bytes(shadow)
    assert sha(ds_read(path)) == sha(shadow)
    assert sha(qemu_replayed(qemu_img, path)) == sha(shadow)
    with ds.open(path, "r+") as image:
        assert vhdx_engine(image).replayed == 1
    qemu_check(qemu_img, path)
    assert sha(qemu_raw(qemu_img, path)) == sha(shadow)


@pytest.fixture
def logged_image(tmp_path: Path) -> dict[str, Any]:
    """A clean 8 MiB dynamic image (1 MiB blocks, block 0 written) and, appended at the end of the
    file, two 1 MiB payload areas (patterns 0xA2, 0xA3) no BAT entry references yet."""
    path = tmp_path / "log.vhdx"
    with ds.create(path, "vhdx", 8 * MiB, block_size=MiB) as image:
        image.write(b"\x01" * 4096)
    end = path.stat().st_size
    area2, area3 = -(-end // MiB) * MiB, -(-end // MiB) * MiB + MiB
    poke(path, area2, b"\xa2" * MiB + b"\xa3" * MiB)
    bat = region(path, BAT_GUID).file_offset
    page = bytearray(peek(path, bat, 4096))
    page_a = bytearray(page)
    page_a[16:24] = (area2 | FULLY_PRESENT).to_bytes(8, "little")  # block 2
    page_b = bytearray(page_a)
    page_b[24:32] = (area3 | FULLY_PRESENT).to_bytes(8, "little")  # block 3
    base = bytes(b"\x01" * 4096 + bytes(8 * MiB - 4096))
    with_a = base[: 2 * MiB] + b"\xa2" * MiB + base[3 * MiB :]
    with_b = with_a[: 3 * MiB] + b"\xa3" * MiB + with_a[4 * MiB :]
    return {"path": path, "bat": bat, "page_a": bytes(page_a), "page_b": bytes(page_b),
            "base": base, "with_a": with_a, "with_b": with_b, "size": area3 + MiB,
            "log": current_header(path).log_offset}


LOG_CASES = ["good", "gap", "bad-crc-head", "wrong-guid", "data-sector-sequence", "zero-descriptor",
             "head-is-its-own-tail", "bad-crc-tail", "no-entry", "flushed-past-eof"]


@pytest.mark.parametrize("case", LOG_CASES)
def test_handmade_logs(logged_image: dict[str, Any], qemu_img: str, case: str) -> None:
    """Two entries, A (block 2 mapped) then B (block 3 mapped), B's tail naming A. Corrupt
    entries are ignored by the sequence search: a valid A alone is still a complete sequence.
    No valid sequence at all is a CorruptError."""
    li = logged_image
    path: Path = li["path"]
    guid = new_guid()
    seq, size = 5, li["size"]
    a = log_entry(seq, 0, guid, [(li["bat"], li["page_a"])], size, size)
    b_seq = seq + 2 if case == "gap" else seq + 1
    b_tail = len(a) if case == "head-is-its-own-tail" else 0
    b_writes: list[tuple[int, bytes | int]] = [(li["bat"], li["page_b"])]
    if case == "zero-descriptor":
        b_writes = [(li["bat"], 4096)]  # every block not present: the disk reads as zeros
    b_flushed = size + GiB if case == "flushed-past-eof" else size
    b = log_entry(b_seq, b_tail, new_guid() if case == "wrong-guid" else guid, b_writes, b_flushed, size)
    if case == "bad-crc-head":
        b[-100] ^= 1
    if case == "data-sector-sequence":
        b[-4] ^= 1  # the data sector's sequence_low
        reseal(b)
    if case == "bad-crc-tail":
        a[-100] ^= 1
    if case != "no-entry":
        poke(path, li["log"], bytes(a + b))
    put_header(path, log_guid=guid)
    expected = {"good": li["with_b"], "gap": li["with_a"], "bad-crc-head": li["with_a"],
                "wrong-guid": li["with_a"], "data-sector-sequence": li["with_a"],
                "zero-descriptor": bytes(8 * MiB),
                # B names itself as its tail: a sequence of B alone (its page maps blocks 2 and 3)
                "head-is-its-own-tail": li["with_b"]}.get(case)
    age(path)
    state = file_state(path)
    if expected is None:
        for mode in ("r", "r+"):
            with pytest.raises(CorruptError):
                open_read_all(path, mode)
        assert file_state(path) == state
        return
    assert sha(open_read_all(path)) == sha(expected)
    assert file_state(path) == state
    if case == "gap":
        # qemu 7.2 does not insist on sequence + 1 and replays B as well (with_b): it is no
        # oracle here; the spec's search (vhdx.md 7.1) ends the sequence at the gap
        assert sha(qemu_replayed(qemu_img, path)) == sha(li["with_b"])
    elif case == "data-sector-sequence":
        # qemu accepts B in its search (the CRC is right) and then fails the replay on the data
        # sector (EINVAL): no oracle either; by vhdx.md 7.1 such an entry is not valid
        copy = path.with_name("copy.vhdx")
        shutil.copyfile(path, copy)
        qemu_fails("check", "-r", "all", "-f", "vhdx", str(copy))
    else:
        assert sha(qemu_replayed(qemu_img, path)) == sha(expected)  # qemu's replay agrees
    with ds.open(path, "r+") as image:
        assert vhdx_engine(image).replayed >= 1
        assert sha(image.read()) == sha(expected)
    assert current_header(path).is_log_guid_zero
    qemu_check(qemu_img, path)
    assert sha(qemu_raw(qemu_img, path)) == sha(expected)


ABSURD_LOG_PROBE = """
import resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import diskspec.runtime as ds
from diskspec.runtime.errors import DiskspecError
tracemalloc.start()
start = time.perf_counter()
try:
    with ds.open(sys.argv[1], sys.argv[2]) as image:
        image.read(4096)
    outcome = "opened"
except DiskspecError as exc:
    outcome = type(exc).__name__
except MemoryError:
    outcome = "MemoryError"
except OSError as exc:
    outcome = "OSError:" + str(exc.errno)
print(outcome, time.perf_counter() - start, tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("mode", ["r", "r+"])
@pytest.mark.parametrize("absurd", ["zero-length-1T", "zero-length-256M", "last-file-offset-2^60",
                                    "data-offset-2^60"])
def test_absurd_log_entries_are_bounded(logged_image: dict[str, Any], tmp_path: Path, absurd: str,
                                        mode: str) -> None:
    """Valid (checksummed) entries with absurd sizes or offsets: a clear DiskspecError or a
    replay that works, quickly and in little memory -- never a MemoryError or an OSError."""
    li = logged_image
    path: Path = li["path"]
    guid = new_guid()
    size = li["size"]
    writes: list[tuple[int, bytes | int]] = [(li["bat"], li["page_a"])]
    last = size
    if absurd.startswith("zero-length"):
        writes.append((size, (1 << 40) if absurd.endswith("1T") else 256 * MiB))
    elif absurd == "last-file-offset-2^60":
        last = 1 << 60
    else:
        writes.append((1 << 60, li["page_b"]))
    poke(path, li["log"], bytes(log_entry(9, 0, guid, writes, size, last)))
    put_header(path, log_guid=guid)
    proc = subprocess.run([sys.executable, "-c", ABSURD_LOG_PROBE, str(path), mode], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    outcome, elapsed, peak = proc.stdout.split()
    assert outcome in ("opened", "CorruptError", "UnsupportedFeatureError"), proc.stdout
    assert float(elapsed) < 2.0, f"open took {float(elapsed):.1f} s"
    assert int(peak) < 64 * MiB, f"open allocated {int(peak) / MiB:.0f} MiB"


# -- 5. bad input -----------------------------------------------------------------------------------


@pytest.fixture
def dynamic_image(tmp_path: Path) -> tuple[Path, bytes]:
    """An 8 MiB dynamic image (1 MiB blocks) with blocks 0-2 allocated; returns (path, content)."""
    path = tmp_path / "dyn.vhdx"
    with ds.create(path, "vhdx", 8 * MiB, block_size=MiB) as image:
        shadow = bytearray(image.size)
        write_both(image, shadow, 100, random.Random(1).randbytes(3 * MiB - 200))
    return path, bytes(shadow)


@pytest.mark.parametrize("slot", [0, 1])
def test_one_bad_header_is_survived_and_repaired(dynamic_image: tuple[Path, bytes], qemu_img: str,
                                                 slot: int) -> None:
    path, content = dynamic_image
    poke(path, HEADER_SLOTS[slot] + 1000, b"\x01")  # a reserved byte: only the CRC notices
    with ds.open(path) as image:
        assert any("header" in w for w in image.engine.warnings)
        assert image.read() == content
        result = image.engine.check()
        assert result.corruptions and not result.clean
    assert qemu_raw(qemu_img, path) == content  # qemu takes the other header too
    with ds.open(path, "r+") as image:
        assert image.engine.check(repair=True).repaired
    with ds.open(path) as image:
        assert not image.engine.warnings
        assert image.engine.check().clean
        assert image.read() == content
    for at in HEADER_SLOTS:
        assert vhdx.Header.verify_buffer(peek(path, at, 4096))
    qemu_check(qemu_img, path)


@pytest.mark.parametrize("same", [True, False], ids=["identical", "different"])
def test_headers_with_equal_sequence_numbers(dynamic_image: tuple[Path, bytes], qemu_img: str,
                                             same: bool) -> None:
    """Disk2VHD writes two identical headers with one sequence number; the spec leaves a tie
    undefined and vhdx.md recommends header 1 (as openvmm)."""
    path, content = dynamic_image
    first = current_header(path)
    second = current_header(path)
    if not same:
        second.data_write_guid = new_guid()
    for at, h in zip(HEADER_SLOTS, (first, second), strict=True):
        poke(path, at, h.update_checksum().build())
    with ds.open(path) as image:
        assert vhdx_engine(image).header.data_write_guid == first.data_write_guid
        assert image.read() == content
    if same:
        assert qemu_raw(qemu_img, path) == content


def test_header_with_another_version_is_invalid(dynamic_image: tuple[Path, bytes]) -> None:
    """Version must be 1; a checksummed header of version 2 with a higher sequence number is not a
    valid header, so the other one is current."""
    path, content = dynamic_image
    good = current_header(path)
    bad = current_header(path)
    bad.version, bad.sequence_number = 2, good.sequence_number + 10
    bad.log_guid = new_guid()  # if it were taken, the open would look for a log
    poke(path, HEADER_SLOTS[0], bad.update_checksum().build())
    poke(path, HEADER_SLOTS[1], good.update_checksum().build())
    with ds.open(path) as image:
        assert any("header 1" in w for w in image.engine.warnings)
        assert image.read() == content


@pytest.mark.parametrize("state", [1, 3, 5], ids=["undefined", "unmapped", "unmapped-v095"])
def test_soft_anchored_blocks_read_as_zeros(dynamic_image: tuple[Path, bytes], qemu_img: str,
                                            pyvhdi: Any, state: int) -> None:
    """UNDEFINED / UNMAPPED entries may keep their old offset (a soft anchor); they read as zeros
    (qemu's choice too) and a write there allocates afresh, the rest of the block zero."""
    path, content = dynamic_image
    entry = int.from_bytes(peek(path, bat_entry_at(path, 1), 8), "little")
    poke(path, bat_entry_at(path, 1), (entry & ~7 | state).to_bytes(8, "little"))
    expected = bytearray(content[:MiB] + bytes(MiB) + content[2 * MiB :])
    assert ds_read(path) == expected
    assert qemu_raw(qemu_img, path) == expected
    with ds.open(path, "r+") as image:
        write_both(image, expected, MiB + 1000, b"fresh" * 100)
        assert image.engine.check().clean
    assert ds_read(path) == expected
    qemu_check(qemu_img, path)
    assert qemu_raw(qemu_img, path) == expected
    assert vhdi_read(pyvhdi, path) == (len(expected), bytes(expected))


def test_both_headers_bad(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    for at in HEADER_SLOTS:
        poke(path, at + 1000, b"\x01")
    with pytest.raises(CorruptError):
        open_read_all(path)


@pytest.mark.parametrize("damage", ["crc", "entry-count"])
@pytest.mark.parametrize("copy", [0, 1])
def test_one_bad_region_table_is_survived(dynamic_image: tuple[Path, bytes], copy: int, damage: str) -> None:
    path, content = dynamic_image
    if damage == "crc":
        poke(path, REGION_SLOTS[copy] + 5000, b"\x01")
    else:  # an absurd entry count in the damaged copy (its CRC no longer matches either)
        poke(path, REGION_SLOTS[copy] + 8, (0xFFFFFFFF).to_bytes(4, "little"))
    with time_limit(5), ds.open(path) as image:
        if copy == 0:
            assert any("region table" in w for w in image.engine.warnings)
        assert image.read() == content
        result = image.engine.check()
        assert any("region table" in c for c in result.corruptions), f"check misses the damage: {result}"


@pytest.mark.parametrize("copy", [0, 1])
def test_bad_region_table_is_repaired(dynamic_image: tuple[Path, bytes], qemu_img: str, copy: int) -> None:
    """check reports the damaged copy; repair must leave an image whose check is clean (qemu reads
    only the first copy, so until then it cannot open the image at all)."""
    path, content = dynamic_image
    poke(path, REGION_SLOTS[copy] + 5000, b"\x01")
    with ds.open(path, "r+") as image:
        result = image.engine.check(repair=True)
        assert result.corruptions
    with ds.open(path) as image:
        assert image.engine.check().clean, image.engine.check()
        assert not image.engine.warnings
    for at in REGION_SLOTS:
        assert vhdx.RegionTable.verify_buffer(peek(path, at, 64 * KiB))
    qemu_check(qemu_img, path)
    assert qemu_raw(qemu_img, path) == content


def test_both_region_tables_bad(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    for at in REGION_SLOTS:
        poke(path, at + 5000, b"\x01")
    with pytest.raises(CorruptError):
        open_read_all(path)


@pytest.mark.parametrize("overlap", ["metadata-on-bat", "bat-on-log", "bat-in-header-section",
                                     "bat-past-the-end"])
def test_bad_region_placement(dynamic_image: tuple[Path, bytes], qemu_img: str, overlap: str) -> None:
    path, _ = dynamic_image
    table = region_table(path)
    bat = next(e for e in table.entries if e.guid == BAT_GUID)
    meta = next(e for e in table.entries if e.guid == METADATA_GUID)
    if overlap == "metadata-on-bat":
        meta.file_offset = bat.file_offset
    elif overlap == "bat-on-log":
        bat.file_offset = current_header(path).log_offset
    elif overlap == "bat-in-header-section":
        bat.file_offset = 0
    else:
        bat.file_offset = 1 << 40
    put_region_table(path, table)
    with pytest.raises(CorruptError):
        open_read_all(path)
    if overlap != "bat-past-the-end":  # (qemu 7.2 opens that one: it reads the BAT as zeros)
        qemu_fails("info", "-f", "vhdx", str(path))  # qemu refuses these too


@pytest.mark.parametrize("required", [True, False])
def test_unknown_region(dynamic_image: tuple[Path, bytes], qemu_img: str, required: bool) -> None:
    path, content = dynamic_image
    guid = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    at = -(-path.stat().st_size // MiB) * MiB
    poke(path, at, b"\x5c" * MiB)
    table = region_table(path)
    table.entries.append(vhdx.RegionTableEntry(guid.bytes_le, at, MiB, int(required), 0))
    put_region_table(path, table)
    if required:
        with pytest.raises(UnsupportedFeatureError) as info:
            open_read_all(path)
        assert str(guid) in str(info.value).lower()
        qemu_fails("info", "-f", "vhdx", str(path))
        return
    assert open_read_all(path) == content  # unknown optional regions are kept, untouched
    with ds.open(path, "r+") as image:
        image.seek(6 * MiB)
        image.write(b"new block")
    assert any(e.guid == guid.bytes_le for e in region_table(path).entries)
    assert peek(path, at, MiB) == b"\x5c" * MiB
    qemu_check(qemu_img, path)


@pytest.mark.parametrize("required", [True, False])
def test_unknown_metadata_item(dynamic_image: tuple[Path, bytes], required: bool) -> None:
    path, content = dynamic_image
    guid = uuid.UUID("0fedcba9-8765-4321-0fed-cba987654321")
    _, table = metadata_table(path)
    table.entries.append(vhdx.MetadataTableEntry(guid.bytes_le, 512 * KiB, 16, 0, 0, int(required), 0, 0))
    put_metadata_table(path, table)
    if required:
        with pytest.raises(UnsupportedFeatureError) as info:
            open_read_all(path)
        assert str(guid) in str(info.value).lower()
    else:
        assert open_read_all(path) == content


def test_bat_entry_past_the_end(dynamic_image: tuple[Path, bytes], qemu_img: str) -> None:
    path, content = dynamic_image
    poke(path, bat_entry_at(path, 1), ((1 << 40) | FULLY_PRESENT).to_bytes(8, "little"))
    with ds.open(path) as image:
        assert image.pread(0, MiB) == content[:MiB]  # block 0 is fine
        with pytest.raises(CorruptError):
            image.pread(MiB + 5, 100)
        result = image.engine.check()
        assert any("past the end" in c for c in result.corruptions), result
        with pytest.raises(ReadOnlyError):
            image.engine.check(repair=True)
    with ds.open(path, "r+") as image:
        assert image.engine.check(repair=True).repaired
    with ds.open(path) as image:
        assert image.engine.check().clean
        expected = content[:MiB] + bytes(MiB) + content[2 * MiB :]  # block 1 is gone
        assert image.read() == expected
    qemu_check(qemu_img, path)
    assert qemu_raw(qemu_img, path) == expected


def test_overlapping_blocks_are_reported(dynamic_image: tuple[Path, bytes]) -> None:
    path, _ = dynamic_image
    first = peek(path, bat_entry_at(path, 0), 8)
    poke(path, bat_entry_at(path, 2), first)  # block 2 shares block 0's place
    with ds.open(path) as image:
        assert any("overlap" in c for c in image.engine.check().corruptions)


@pytest.mark.parametrize("state", [4, 7])
def test_invalid_block_state(dynamic_image: tuple[Path, bytes], state: int) -> None:
    """State 4 is reserved; 7 (partially present) is invalid outside differencing images."""
    path, content = dynamic_image
    entry = int.from_bytes(peek(path, bat_entry_at(path, 1), 8), "little")
    poke(path, bat_entry_at(path, 1), (entry & ~7 | state).to_bytes(8, "little"))
    with ds.open(path) as image:
        assert image.pread(0, MiB) == content[:MiB]
        with pytest.raises(CorruptError):
            image.pread(MiB, 10)


def patch_item(path: Path, item: bytes, payload: bytes) -> None:
    at, old = metadata_item(path, item)
    assert len(payload) == len(old)
    poke(path, at, payload)


ABSURD = ["metadata-entry-count-60000", "virtual-size-2^63", "virtual-size-64T+512", "virtual-size-unaligned",
          "block-size-3M", "block-size-0", "logical-sector-1000", "log-length-2^31", "log-length-2^31-dirty",
          "region-entry-count-2^31", "region-length-4G", "bat-region-too-short", "metadata-item-outside",
          "file-parameters-missing"]


@pytest.mark.parametrize("absurd", ABSURD)
def test_absurd_values_fail_fast(dynamic_image: tuple[Path, bytes], absurd: str) -> None:
    path, _ = dynamic_image
    if absurd == "metadata-entry-count-60000":
        at, _ = metadata_table(path)
        poke(path, at + 10, (60000).to_bytes(2, "little"))
    elif absurd.startswith("virtual-size"):
        value = {"virtual-size-2^63": 1 << 63, "virtual-size-64T+512": (64 << 40) + 512,
                 "virtual-size-unaligned": 8 * MiB + 100}[absurd]
        patch_item(path, VIRTUAL_DISK_SIZE, value.to_bytes(8, "little"))
    elif absurd.startswith("block-size"):
        value = 3 * MiB if absurd.endswith("3M") else 0
        patch_item(path, FILE_PARAMETERS, value.to_bytes(4, "little") + bytes(4))
    elif absurd == "logical-sector-1000":
        patch_item(path, LOGICAL_SECTOR_SIZE, (1000).to_bytes(4, "little"))
    elif absurd.startswith("log-length"):
        put_header(path, log_length=1 << 31, **({"log_guid": new_guid()} if "dirty" in absurd else {}))
    elif absurd == "region-entry-count-2^31":
        for copy in (0, 1):  # both copies, checksums fixed up
            raw = bytearray(peek(path, REGION_SLOTS[copy], 64 * KiB))
            raw[8:12] = (1 << 31).to_bytes(4, "little")
            raw[4:8] = bytes(4)
            raw[4:8] = crc32c.crc32c(bytes(raw)).to_bytes(4, "little")
            poke(path, REGION_SLOTS[copy], bytes(raw))
    elif absurd == "region-length-4G":
        table = region_table(path)
        table.entries[0].length = (1 << 32) - MiB
        put_region_table(path, table)
    elif absurd == "bat-region-too-short":
        table = region_table(path)
        next(e for e in table.entries if e.guid == BAT_GUID).length = 0
        put_region_table(path, table)
    elif absurd == "metadata-item-outside":
        _, meta = metadata_table(path)
        meta.entries[0].offset = MiB - 4
        put_metadata_table(path, meta)
    else:
        _, meta = metadata_table(path)
        meta.entries = [e for e in meta.entries if e.item_id != FILE_PARAMETERS]
        put_metadata_table(path, meta)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DiskspecError) as info:
            open_read_all(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, CorruptError | UnsupportedFeatureError), repr(info.value)
    assert elapsed < 0.5
    assert peak < 16 * MiB


@pytest.mark.parametrize("keep", [0, 100, 64 * KiB + 100, MiB - 1, MiB + 5000, 3 * MiB + 100])
def test_truncated_image(dynamic_image: tuple[Path, bytes], keep: int) -> None:
    path, _ = dynamic_image
    with open(path, "r+b") as f:
        f.truncate(keep)
    with pytest.raises(DiskspecError):
        open_read_all(path, format="vhdx")


def test_not_a_vhdx(tmp_path: Path) -> None:
    path = tmp_path / "x.vhdx"
    path.write_bytes(b"vhdxfilX" + bytes(2 * MiB))
    with pytest.raises(NotThisFormatError):
        open_read_all(path, format="vhdx")


# -- 6. differencing identity and parents -------------------------------------------------------------


def set_linkage(child: Path, guid_text: str) -> None:
    """Replace the parent_linkage value in the child's parent locator (same length, in place)."""
    at, payload = metadata_item(child, PARENT_LOCATOR)
    loc = vhdx.ParentLocator.parse(payload)
    for e in loc.entries:
        if e.key == "parent_linkage":
            assert len(guid_text) * 2 == e.value_length
            poke(child, at + e.value_offset, guid_text.encode("utf-16-le"))
            return
    raise AssertionError("no parent_linkage")


def test_wrong_parent_linkage(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    content = make_vhdx_parent(parent)
    child = tmp_path / "child.vhdx"
    with ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB) as image:
        shadow = bytearray(content)
        write_both(image, shadow, 1000, b"child data")
    assert ds_read(child) == shadow
    set_linkage(child, "{" + str(uuid.uuid4()) + "}")
    with pytest.raises(ParentMissingError, match="parent"):
        open_read_all(child)
    # named explicitly, the identity check becomes a warning (the documented override)
    with ds.open(child, parent=parent) as image:
        assert any("parent" in w and "explicitly" in w for w in image.engine.warnings)
        assert image.read() == shadow
    # an upper-case linkage is the same GUID (the spec's own example is upper case)
    set_linkage(child, "{" + str(uuid.UUID(bytes_le=current_header(parent).data_write_guid)).upper() + "}")
    assert ds_read(child) == shadow


def test_parent_written_after_the_child_breaks_the_link(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    content = make_vhdx_parent(parent)
    child = tmp_path / "child.vhdx"
    ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB).close()
    ds.open(parent, "r+").close()  # opened for writing, nothing written: still the parent
    assert ds_read(child) == content
    with ds.open(parent, "r+") as image:
        image.write(b"changed")  # a new DataWriteGuid
    with pytest.raises(ParentMissingError):
        open_read_all(child)
    assert open_read_all(child, parent=parent)[:7] == b"changed"


def test_parent_found_when_the_pair_moves(tmp_path: Path) -> None:
    (tmp_path / "a" / "disks").mkdir(parents=True)
    parent = tmp_path / "a" / "disks" / "parent.vhdx"
    content = make_vhdx_parent(parent)
    child = tmp_path / "a" / "child.vhdx"
    with ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB) as image:
        shadow = bytearray(content)
        write_both(image, shadow, 1000, b"child data")
    shutil.move(tmp_path / "a", tmp_path / "b")  # the absolute path is stale now
    with ds.open(tmp_path / "b" / "child.vhdx") as image:
        assert image.backing is not None
        assert image.backing.path.resolve() == (tmp_path / "b" / "disks" / "parent.vhdx").resolve()
        assert image.read() == shadow


def test_missing_parent(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    make_vhdx_parent(parent)
    child = tmp_path / "child.vhdx"
    ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB).close()
    parent.rename(tmp_path / "elsewhere.vhdx")
    with pytest.raises(ParentMissingError, match="parent"):
        open_read_all(child)
    assert not any(open_read_all(child, backing=False))


def test_sector_size_mismatch_with_parent(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    make_vhdx_parent(parent, lss=4096)
    child = tmp_path / "child.vhdx"
    with pytest.raises(DiskspecError):
        ds.create(child, "vhdx", None, subformat="differencing", parent=parent,
                  logical_sector_size=512).close()
    assert not child.exists(), "a failed create left a half-made image behind"


def test_fresh_child_with_block_state_zero_reads_as_its_parent(tmp_path: Path) -> None:
    """block_state_zero is about new blocks of dynamic disks; a new differencing child must read as
    its parent (ZERO blocks would hide it) -- or the option is refused."""
    parent = tmp_path / "parent.vhdx"
    content = make_vhdx_parent(parent)
    child = tmp_path / "child.vhdx"
    try:
        image = ds.create(child, "vhdx", None, subformat="differencing", parent=parent,
                          block_state_zero=True)
    except DiskspecError:
        return
    with image:
        assert image.read() == content


def child_with_blocks(tmp_path: Path) -> tuple[Path, Path, bytearray]:
    """A child with block 0 partially present (bitmap), block 1 fully present, the rest unset."""
    parent = tmp_path / "parent.vhdx"
    shadow = bytearray(make_vhdx_parent(parent))
    child = tmp_path / "child.vhdx"
    with ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB) as image:
        write_both(image, shadow, 4096, b"p" * 1000)
        write_both(image, shadow, MiB, b"f" * MiB)
    return parent, child, shadow


def test_differencing_zero_block_hides_the_parent(tmp_path: Path) -> None:
    """PAYLOAD_BLOCK_ZERO reads zeros in a differencing image too (it does not fall through), and
    a partial write into it keeps the rest of the block zero."""
    _, child, shadow = child_with_blocks(tmp_path)
    poke(child, bat_entry_at(child, 2), (2).to_bytes(8, "little"))
    shadow[2 * MiB : 3 * MiB] = bytes(MiB)
    assert ds_read(child) == shadow
    with ds.open(child, "r+") as image:
        write_both(image, shadow, 2 * MiB + 777, b"z" * 1000)
    assert ds_read(child) == shadow
    with ds.open(child) as image:
        assert image.engine.check().clean


def test_partially_present_block_without_a_bitmap(tmp_path: Path) -> None:
    _, child, shadow = child_with_blocks(tmp_path)
    cr = (1 << 23) * 512 // MiB
    poke(child, bat_entry_at(child, cr), bytes(8))  # chunk 0's sector bitmap entry: not present
    with ds.open(child) as image:
        assert image.pread(MiB, MiB) == shadow[MiB : 2 * MiB]  # the fully present block is fine
        with pytest.raises(CorruptError):
            image.pread(0, 8192)


def test_partial_sector_write_needs_the_parent(tmp_path: Path) -> None:
    parent = tmp_path / "parent.img"
    parent.write_bytes(random.Random(3).randbytes(4 * MiB))
    child = tmp_path / "child.vhdx"
    ds.create(child, "vhdx", None, subformat="differencing", parent=parent, block_size=MiB).close()
    with ds.open(child, "r+", backing=False) as image:
        image.seek(2 * 512)
        image.write(b"w" * 512)  # whole sectors: fine without the parent
        image.seek(5 * 512 + 3)
        with pytest.raises(UnsupportedFeatureError):
            image.write(b"partial")
    shadow = bytearray(parent.read_bytes())
    shadow[1024:1536] = b"w" * 512
    assert ds_read(child, parent=parent) == shadow


