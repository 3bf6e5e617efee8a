"""The qcow2 engine's read side against qemu-img / qemu-io 7.2: images qemu makes over an
option matrix read with qemu's guest bytes (every snapshot too), and `info` / `map` JSON
equal qemu-img's; hostile headers give clear errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.errors import CorruptError, ReadOnlyError, UnsupportedFeatureError

from .conftest import require_tool
from .test_cli import ds_run

MiB = 1 << 20


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, check=False)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


def qimg(*args: str | Path, cwd: Path | None = None) -> str:
    return sh(require_tool("qemu-img"), *args, cwd=cwd)


def qio(path: Path, *commands: str, fmt: str = "qcow2") -> None:
    args: list[str | Path] = [require_tool("qemu-io"), "-f", fmt]
    for c in commands:
        args += ["-c", c]
    sh(*args, path, cwd=path.parent)


def qemu_bytes(path: Path, *extra: str) -> bytes:
    out = path.with_name(path.name + ".raw")
    qimg("convert", *extra, "-O", "raw", path, out, cwd=path.parent)
    try:
        return out.read_bytes()
    finally:
        out.unlink()


WRITES = ("write -P 0x11 0 64k", "write -P 0x22 100k 3k", "write -z 256k 128k", "write -P 0x33 1M 300k",
          "discard 1088k 64k", "write -P 0x44 3M 512", "write -z -u 3M 4k")


def make(d: Path, name: str, options: str, size: str = "4M", writes: tuple[str, ...] = WRITES) -> Path:
    path = d / name
    # (qemu-img finds a relative data_file from its working directory)
    qimg("create", "-q", "-f", "qcow2", *(["-o", options] if options else []), path, size, cwd=d)
    if writes:
        qio(path, *writes)
    return path


def same_as_qemu(path: Path, map_json: bool = True, **kwargs: object) -> None:
    """Guest bytes, info and map JSON as qemu-img has them."""
    with ds.open(path, backing_policy="any", **kwargs) as image:  # type: ignore[arg-type]
        assert image.read() == qemu_bytes(path), path.name
        for at in (0, 100 * 1024 + 7, 3 * MiB):  # small positioned reads (the fast path)
            image.seek(at)
            assert image.read(700) == qemu_bytes(path)[at : at + 700]
    code, out, errs = ds_run("info", "--output=json", "--parents=any", path)
    assert code == 0, errs
    ours = json.loads(out)
    ours.pop("warnings", None)
    assert ours == json.loads(qimg("info", "--output=json", path, cwd=path.parent))
    if not map_json:
        return
    code, out, errs = ds_run("map", "--output=json", "--parents=any", path)
    assert code == 0, errs
    assert out == qimg("map", "--output=json", path, cwd=path.parent), path.name


MATRIX = {
    "v2": "compat=0.10",
    "v2-512": "compat=0.10,cluster_size=512",
    "v3-4k-rc1": "cluster_size=4k,refcount_bits=1",
    "v3-64k-rc64": "refcount_bits=64",
    "v3-2M": "cluster_size=2M",
    "extended-l2": "extended_l2=on",
    "extended-l2-32k": "extended_l2=on,cluster_size=32k",
    "lazy": "lazy_refcounts=on",
    "prealloc-metadata": "preallocation=metadata",
    "prealloc-falloc": "preallocation=falloc",
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_matrix_reads_as_qemu(tmp_path: Path, name: str) -> None:
    opts = MATRIX[name]
    writes = tuple(w for w in WRITES if not (opts.startswith("compat=0.10") and "-z" in w))
    same_as_qemu(make(tmp_path, f"{name}.qcow2", opts, writes=writes))


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_compressed_reads_and_maps_as_qemu(tmp_path: Path, ctype: str) -> None:
    src = make(tmp_path, "src.qcow2", "")
    packed = tmp_path / f"{ctype}.qcow2"
    qimg("convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}", src, packed)
    same_as_qemu(packed)
    with ds.open(packed) as image:
        assert any(e.state.value == "data" and e.file_offset is None for e in image.extents())


def test_snapshots_each_read_as_qemu(tmp_path: Path) -> None:
    path = make(tmp_path, "snap.qcow2", "")
    qimg("snapshot", "-c", "first", path)
    qio(path, "write -P 0x55 0 128k", "write -z 1M 64k")
    qimg("snapshot", "-c", "second", path)
    qio(path, "discard 0 64k", "write -P 0x66 2M 64k")
    same_as_qemu(path)
    with ds.open(path) as image:
        listed = image.engine.snapshots()
    assert [(s.id, s.name) for s in listed] == [("1", "first"), ("2", "second")]
    assert all(s.disk_size == 4 * MiB for s in listed)
    for s in listed:
        theirs = qemu_bytes(path, "-l", f"snapshot.name={s.name}")
        for key in (s.name, s.id):
            with ds.open(path, snapshot=key) as snap:
                assert snap.size == s.disk_size and snap.read() == theirs
    with pytest.raises(ds.errors.DiskspecError, match="no snapshot"):
        ds.open(path, snapshot="nope")


def test_backing_chains(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    raw.write_bytes(bytes(range(256)) * (8 * 1024))  # 2 MiB: shorter than the 4 MiB child
    over_raw = make(tmp_path, "over-raw.qcow2", "backing_file=base.raw,backing_fmt=raw",
                    writes=("write -P 0x77 64k 4k", "write -z 128k 64k"))
    same_as_qemu(over_raw)
    vhdx = tmp_path / "base.vhdx"
    qimg("create", "-q", "-f", "vhdx", vhdx, "4M")
    qio(vhdx, "write -P 0x12 0 1M", fmt="vhdx")
    # (qemu's vhdx driver gives no offsets in its block status, ours does: map not compared)
    same_as_qemu(make(tmp_path, "over-vhdx.qcow2", "backing_file=base.vhdx,backing_fmt=vhdx",
                      writes=("write -P 0x78 512k 4k",)), map_json=False)
    base = make(tmp_path, "base.qcow2", "")
    mid = make(tmp_path, "mid.qcow2", "backing_file=base.qcow2,backing_fmt=qcow2",
               writes=("write -P 0x79 0 8k",))
    top = make(tmp_path, "top.qcow2", "backing_file=mid.qcow2,backing_fmt=qcow2,extended_l2=on",
               writes=("write -P 0x7a 4k 2k",))
    same_as_qemu(top)
    with ds.open(top) as image:
        assert [p.path.name for p in image.chain()] == ["top.qcow2", "mid.qcow2", "base.qcow2"]
    del base, mid


def test_backing_under_the_policy(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    make(tmp_path, "outside.qcow2", "", writes=())
    child = make(tmp_path / "in", "child.qcow2", f"backing_file={tmp_path / 'outside.qcow2'},"
                 "backing_fmt=qcow2", writes=())
    with pytest.raises(ds.errors.ParentMissingError, match="backing policy"):
        ds.open(child)
    with ds.open(child, backing_policy="any") as image:
        assert image.backing is not None


@pytest.mark.parametrize("raw_data", ["on", "off"])
def test_external_data_file(tmp_path: Path, raw_data: str) -> None:
    """(qemu 7.2 finds a relative data file name from its working directory, so qemu runs
    in the image's; diskspec takes it relative to the image, like a backing file)"""
    path = make(tmp_path, "df.qcow2", f"data_file=df.data,data_file_raw={raw_data}",
                writes=("write -P 0x21 64k 64k", "write -P 0x22 1M 4k"))
    same_as_qemu(path)
    (tmp_path / "in").mkdir()
    moved = make(tmp_path / "in", "df.qcow2", f"data_file={tmp_path / 'far.data'}", writes=())
    with pytest.raises(ds.errors.ParentMissingError, match="external data file"):
        ds.open(moved)
    with ds.open(moved, backing_policy="any") as image:
        assert image.read(4096) == bytes(4096)


def test_read_only_and_write_refused(tmp_path: Path) -> None:
    path = make(tmp_path, "ro.qcow2", "", writes=("write -P 1 0 4k",))
    before = path.read_bytes()
    with ds.open(path) as image, pytest.raises(ReadOnlyError):
        image.write(b"x")
    with pytest.raises(UnsupportedFeatureError, match="writing qcow2"):
        ds.open(path, "r+")
    assert path.read_bytes() == before


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_hostile_headers(tmp_path: Path) -> None:
    base = make(tmp_path, "base.qcow2", "", writes=("write -P 1 0 4k",))
    cases: list[tuple[str, int, bytes, type[Exception], str]] = [
        ("huge-l1", 36, (1 << 31).to_bytes(4, "big"), CorruptError, "L1 table too large"),
        ("l1-past-eof", 40, (1 << 40).to_bytes(8, "big"), CorruptError, "past the end"),
        ("unknown-incompat", 72, (1 << 9).to_bytes(8, "big"), UnsupportedFeatureError, "bit 9"),
        ("huge-reftable", 56, (1 << 20).to_bytes(4, "big"), CorruptError, "too large"),
        ("cluster-bits", 20, (30).to_bytes(4, "big"), UnsupportedFeatureError, "cluster size"),
        ("snapshots-past-eof", 60, (1).to_bytes(4, "big") + (1 << 40).to_bytes(8, "big"), CorruptError,
         "snapshot table"),
    ]
    for name, at, value, error, text in cases:
        bad = tmp_path / f"{name}.qcow2"
        bad.write_bytes(base.read_bytes())
        poke(bad, at, value)
        with pytest.raises(error, match=text):
            ds.open(bad)
        code, _, errs = ds_run("info", bad)
        assert code == 1 and "Traceback" not in errs
    # a dirty and a corrupt image still read
    for bit in (1, 2):
        marked = tmp_path / f"bit{bit}.qcow2"
        marked.write_bytes(base.read_bytes())
        poke(marked, 72, bit.to_bytes(8, "big"))
        with ds.open(marked) as image:
            assert image.read(4096) == b"\x01" * 4096


def test_unknown_incompatible_bit_named_from_the_feature_table(tmp_path: Path) -> None:
    path = make(tmp_path, "named.qcow2", "", writes=())
    data = bytearray(path.read_bytes())
    at = data.find(b"dirty bit")  # the feature name table's first entry: (0, 0, "dirty bit")
    assert at > 0
    data[at - 2 : at] = bytes([0, 7])
    data[at : at + 46] = b"frobnication".ljust(46, b"\0")
    data[72:80] = (1 << 7).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedFeatureError, match="frobnication"):
        ds.open(path)


def test_encrypted_images_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "luks.qcow2"
    qimg("create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=x", "-o",
         "encrypt.format=luks,encrypt.key-secret=sec0", path, "1M")
    with pytest.raises(UnsupportedFeatureError, match="LUKS"):
        ds.open(path)
    code, _, errs = ds_run("info", path)
    assert code == 1 and "LUKS" in errs


def test_a_huge_sparse_image_opens_and_maps_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.qcow2"
    qimg("create", "-q", "-f", "qcow2", path, "1P")  # a full 2 MiB L1 of 262144 entries
    qio(path, "write -P 9 512T 64k")
    with ds.open(path) as image:
        extents = list(image.extents())
        assert len(extents) == 3 and extents[1].offset == 512 << 40
        image.seek(512 << 40)
        assert image.read(65536) == b"\x09" * 65536
        assert image.engine.table_cache.peak <= 4 << 20
