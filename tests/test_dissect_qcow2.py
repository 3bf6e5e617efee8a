"""`diskspec dissect` on qcow2: images made by qemu-img/qemu-io (v2, v3, cluster sizes, extended
L2, refcount widths, snapshots, bitmaps, compression, backing and data files), checked
against what qemu says about them (`qemu-img info/check/map --output=json`, the raw header
bytes); refcount verdicts against `qemu-img check`'s leak/error lines on hand-damaged copies;
remnants in freed clusters; hostile headers that must give damage notes, never a traceback.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diskspec.runtime.cli import dissect as dcli
from diskspec.runtime.dissect import Node, dissect

from .conftest import require_tool, run

KiB = 1 << 10

#: name -> (create options, writes (pattern, offset, length), extra commands)
VARIANTS: dict[str, tuple[str, list[tuple[int, int, int]]]] = {
    "v2": ("compat=0.10", [(1, 0, 200 * KiB)]),
    "v3_c512": ("cluster_size=512", [(1, 0, 100 * KiB), (2, 4 << 20, 4 * KiB)]),
    "v3_c64k": ("cluster_size=65536", [(1, 0, 200 * KiB)]),
    "v3_c2m": ("cluster_size=2097152", [(1, 0, 3 << 20)]),
    "extended_l2": ("extended_l2=on,cluster_size=65536", [(1, 0, 8 * KiB)]),
    "refcount1": ("refcount_bits=1", [(1, 0, 200 * KiB)]),
    "refcount64": ("refcount_bits=64", [(1, 0, 200 * KiB)]),
}


def qemu_json(*args: str) -> Any:
    return json.loads(run(require_tool("qemu-img"), *args, "--output=json"))


def make(d: Path, name: str, options: str, writes: list[tuple[int, int, int]],
         size: str = "64M") -> Path:
    path = d / f"{name}.qcow2"
    run(require_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-o", options, str(path), size)
    cmds = [a for p, o, n in writes for a in ("-c", f"write -P {p} {o} {n}")]
    if cmds:
        run(require_tool("qemu-io"), "-f", "qcow2", *cmds, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    qemu_img, qemu_io = require_tool("qemu-img"), require_tool("qemu-io")
    d = tmp_path_factory.mktemp("dissect_qcow2")
    out = {name: make(d, name, opts, writes) for name, (opts, writes) in VARIANTS.items()}
    snap = make(d, "snapshots", "cluster_size=65536", [(1, 0, 200 * KiB)])
    run(qemu_img, "snapshot", "-c", "first", str(snap))
    run(qemu_io, "-c", "write -P 7 0 64k", str(snap))
    run(qemu_img, "snapshot", "-c", "second", str(snap))
    out["snapshots"] = snap
    bm = make(d, "bitmaps", "cluster_size=65536", [])
    run(qemu_img, "bitmap", "--add", str(bm), "b0")
    run(qemu_io, "-c", "write -P 1 0 200k", str(bm))
    run(qemu_img, "bitmap", "--add", "-g", "128k", str(bm), "b1")
    out["bitmaps"] = bm
    src = d / "src.raw"
    src.write_bytes(b"A" * 300_000 + bytes(range(256)) * 1024 + bytes(500_000))
    comp = d / "compressed.qcow2"
    run(qemu_img, "convert", "-q", "-c", "-O", "qcow2", str(src), str(comp))
    out["compressed"] = comp
    child = d / "child.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", out["v2"].name, "-F", "qcow2",
        str(child))
    run(qemu_io, "-c", "write -P 3 64k 64k", str(child))
    out["backing"] = child
    out["data_file"] = make(d, "data_file", f"data_file={d / 'df.raw'}", [(1, 0, 200 * KiB)])
    return out


def header(path: Path) -> dict[str, int]:
    raw = path.read_bytes()[:104]
    keys = ("version", "backing_file_offset", "backing_file_size", "cluster_bits",
            "virtual_size", "crypt_method", "l1_size", "l1_table_offset",
            "refcount_table_offset", "refcount_table_clusters", "nb_snapshots",
            "snapshots_offset")
    out = dict(zip(keys, struct.unpack(">IQIIQIIQQIIQ", raw[4:72]), strict=True))
    if out["version"] >= 3:
        out["refcount_order"] = struct.unpack(">I", raw[96:100])[0]
    return out


def cli(path: Path, *args: str) -> int:
    return dcli.main([str(path), *args, "--output=json"])


ALL = [*VARIANTS, "snapshots", "bitmaps", "compressed", "backing", "data_file"]


@pytest.mark.parametrize("name", ALL)
def test_qemu_images_are_clean_and_placed_where_the_header_says(
        images: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = images[name]
    info = qemu_json("info", str(path))
    check = qemu_json("check", str(path))
    assert check.get("corruptions", 0) == 0 and check.get("leaks", 0) == 0
    h = header(path)
    root = dissect(path)
    assert root.value("format") == "qcow2"
    assert root.all_damage() == []
    assert root.value("virtual_size") == info["virtual-size"]
    assert root.value("subformat") == f"v{h['version']}"
    hn = root.find("header")
    assert hn is not None and hn.offset == 0
    assert hn.value("cluster_size") == info["cluster-size"]
    for key in ("l1_size", "l1_table_offset", "refcount_table_offset", "nb_snapshots"):
        f = hn.field(key)
        assert f is not None and f.value == h[key]
    f = hn.field("l1_table_offset")
    assert f is not None and (f.offset, f.size) == (40, 8)
    spec = info["format-specific"]["data"]
    assert hn.value("refcount_bits") == spec["refcount-bits"]
    if h["version"] >= 3:
        f = hn.field("refcount_order")
        assert f is not None and (f.offset, f.value) == (96, h["refcount_order"])
    l1 = root.find("l1_table")
    assert l1 is not None and l1.offset == h["l1_table_offset"] and l1.size == 8 * h["l1_size"]
    rt = root.find("refcount_table")
    assert rt is not None and rt.offset == h["refcount_table_offset"]
    assert rt.size == h["refcount_table_clusters"] * info["cluster-size"]
    verdict = rt.verdict("refcounts")
    assert verdict is not None and verdict.ok
    # every cluster qemu counts as used is one that dissect references
    referenced = rt.value("referenced_clusters")
    assert isinstance(referenced, int) and referenced > 0
    if spec.get("extended-l2"):
        l2 = next(n for _, n in root.walk() if n.kind == "l2_table")
        assert l2.size == info["cluster-size"] and l2.value("normal") == 1
    assert cli(path) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "qcow2" and not doc["damaged"]


def test_allocated_and_compressed_counts_match_qemu_check(images: dict[str, Path]) -> None:
    path = images["compressed"]
    check = qemu_json("check", str(path))
    root = dissect(path)
    l2s = [n for _, n in root.walk() if n.kind == "l2_table"]
    normal = sum(int(n.value("normal") or 0) for n in l2s)
    compressed = sum(int(n.value("compressed") or 0) for n in l2s)
    assert compressed == check["compressed-clusters"] > 0
    assert normal + compressed == check["allocated-clusters"]
    assert any(n.kind == "compressed_data" for _, n in root.walk())


def test_bat_rows_agree_with_qemu_map(images: dict[str, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = images["v3_c64k"]
    extents = qemu_json("map", str(path))
    root = dissect(path, bat=True)
    l2 = next(n for _, n in root.walk() if n.kind == "l2_table")
    assert l2.table is not None and l2.table.count == 8192
    rows = list(l2.table)
    for e in extents:
        if e.get("data") and "offset" in e:
            for k in range(e["length"] // 65536):
                row = rows[e["start"] // 65536 + k]
                assert row[2] == "normal" and row[3] == e["offset"] + k * 65536
    l1 = root.find("l1_table")
    assert l1 is not None and l1.table is not None and l1.table.count == 1
    assert dcli.main([str(path), "--bat", "--plain"]) == 0
    assert "l2_table@" in capsys.readouterr().out


def test_snapshots_match_qemu_info(images: dict[str, Path]) -> None:
    path = images["snapshots"]
    info = qemu_json("info", str(path))
    root = dissect(path)
    table = root.find("snapshot_table")
    assert table is not None and table.offset == header(path)["snapshots_offset"]
    snaps = [c for c in table.children if c.kind == "snapshot_entry"]
    assert len(snaps) == len(info["snapshots"]) == 2
    for node, want in zip(snaps, info["snapshots"], strict=True):
        assert node.value("id_str") == want["id"] and node.value("name") == want["name"]
        assert node.value("date_sec") == want["date-sec"]
        assert node.value("vm_clock_nsec") == want["vm-clock-sec"] * 10**9 + want["vm-clock-nsec"]
        l1 = root.find(f"snapshot_l1[{snaps.index(node)}]")
        assert l1 is not None and l1.offset == node.value("l1_table_offset")


def test_bitmaps_match_qemu_info(images: dict[str, Path]) -> None:
    path = images["bitmaps"]
    info = qemu_json("info", str(path))
    want = {b["name"]: b["granularity"] for b in info["format-specific"]["data"]["bitmaps"]}
    root = dissect(path)
    directory = root.find("bitmap_directory")
    assert directory is not None
    got = {str(c.value("name")): 1 << int(c.value("granularity_bits") or 0)
           for c in directory.children}
    assert got == want
    assert len([n for _, n in root.walk() if n.kind == "bitmap_table"]) == 2
    hn = root.find("header")
    assert hn is not None
    f = hn.field("autoclear_features")
    assert f is not None and f.meaning == "bitmaps"  # named from the feature name table


def test_backing_and_data_file_names(images: dict[str, Path]) -> None:
    info = qemu_json("info", str(images["backing"]))
    root = dissect(images["backing"])
    assert root.value("backing_file") == info["backing-filename"]
    assert root.value("backing_format") == info["backing-filename-format"]
    node = root.find("backing_file_name")
    assert node is not None and node.offset == header(images["backing"])["backing_file_offset"]
    info = qemu_json("info", str(images["data_file"]))
    root = dissect(images["data_file"])
    assert root.value("data_file") == info["format-specific"]["data"]["data-file"]
    f = root.find("header")
    assert f is not None
    assert "external data file" in str(f.field("incompatible_features").meaning)  # type: ignore[union-attr]


# -- refcount verdicts against qemu-img check -------------------------------------------------


def set_refcount(path: Path, cluster: int, value: int) -> None:
    """Write a 16-bit refcount (the image's refcount block 0)."""
    h = header(path)
    with path.open("r+b") as f:
        f.seek(h["refcount_table_offset"])
        block = struct.unpack(">Q", f.read(8))[0]
        f.seek(block + 2 * cluster)
        f.write(struct.pack(">H", value))


def qemu_check_lines(path: Path) -> tuple[int, str]:
    proc = subprocess.run([require_tool("qemu-img"), "check", str(path)], capture_output=True,
                          text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_leak_and_error_named_as_qemu_check_names_them(images: dict[str, Path],
                                                      tmp_path: Path) -> None:
    leak = tmp_path / "leak.qcow2"
    shutil.copyfile(images["v3_c64k"], leak)
    size = leak.stat().st_size
    with leak.open("r+b") as f:  # one more cluster in the file: refcount 1, unreferenced
        f.truncate(size + 65536)
    free = size // 65536
    set_refcount(leak, free, 1)
    code, text = qemu_check_lines(leak)
    assert code == 3 and f"Leaked cluster {free} refcount=1 reference=0" in text
    root = dissect(leak)
    rt = root.find("refcount_table")
    assert rt is not None and not rt.verdict("refcounts").ok  # type: ignore[union-attr]
    assert any(f"cluster {free} at {free * 65536:#x}: refcount=1 reference=0" in d
               for d in rt.damage)
    assert cli(leak) == 2

    err = tmp_path / "error.qcow2"
    shutil.copyfile(images["v3_c64k"], err)
    extents = qemu_json("map", str(err))
    data = next(e["offset"] for e in extents if e.get("data"))
    set_refcount(err, data // 65536, 0)
    code, text = qemu_check_lines(err)
    assert code == 2 and f"ERROR cluster {data // 65536} refcount=0 reference=1" in text
    rt = dissect(err).find("refcount_table")
    assert rt is not None
    assert f"ERROR cluster {data // 65536} at {data:#x}: refcount=0 reference=1" in rt.damage


def test_remnant_in_a_discarded_cluster(tmp_path: Path) -> None:
    """qemu 7.2 punches a hole when it frees a discarded cluster (the bytes are gone), so the
    remnant is made by hand: bytes written into the freed cluster, which qemu-img check still
    calls free."""
    path = make(tmp_path, "disc", "cluster_size=65536", [(0xAB, 0, 64 * KiB), (0xCD, 64 * KiB,
                                                                                64 * KiB)])
    before = qemu_json("map", str(path))
    freed = next(e["offset"] for e in before if e.get("data") and e["start"] == 0)
    run(require_tool("qemu-io"), "-c", "discard 0 64k", str(path))
    with path.open("rb") as f:
        f.seek(freed)
        assert f.read(65536) == bytes(65536)  # qemu left no bytes behind
    with path.open("r+b") as f:
        f.seek(freed + 4096)
        f.write(b"\xab" * 8192)
    code, _ = qemu_check_lines(path)
    assert code == 0
    root = dissect(path)
    assert root.all_damage() == []
    remnants = [n for _, n in root.walk() if n.kind == "remnant"]
    assert [(n.offset, n.size) for n in remnants] == [(freed + 4096, 8192)]
    gap = next(n for n in root.children if n.kind == "gap" and n.offset <= freed < n.end)
    assert gap.offset == freed


def test_stale_bytes_after_a_table_are_shown_as_slack(images: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "slack.qcow2"
    shutil.copyfile(images["v3_c64k"], path)
    l1 = header(path)["l1_table_offset"]
    with path.open("r+b") as f:
        f.seek(l1 + 512)
        f.write(struct.pack(">Q", 0x8000000000070000))
    assert qemu_check_lines(path)[0] == 0
    slack = dissect(path).find(f"slack@{l1 + 8:#x}")
    assert slack is not None and slack.value("nonzero_bytes") == 2  # 0x80 and 0x07
    assert slack.value("first_nonzero") == l1 + 512


# -- hostile headers --------------------------------------------------------------------------


def patch(offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def apply(buf: bytearray) -> None:
        struct.pack_into(fmt, buf, offset, value)
    return apply


def l2_loops(buf: bytearray) -> None:
    """Every L1 entry points at the L1 table's own cluster; the L2 entries point back."""
    l1 = struct.unpack_from(">Q", buf, 40)[0]
    struct.pack_into(">I", buf, 36, 4096)
    for i in range(4096):
        struct.pack_into(">Q", buf, l1 + 8 * i, (1 << 63) | l1)


HOSTILE: dict[str, Callable[[bytearray], object]] = {
    "l1_size_huge": patch(36, ">I", 0xFFFFFFFF),
    "l1_offset_past_eof": patch(40, ">Q", 1 << 50),
    "l1_offset_misaligned": patch(40, ">Q", 0x30008),
    "reftable_clusters_huge": patch(56, ">I", 0xFFFFFFFF),
    "reftable_past_eof": patch(48, ">Q", 1 << 40),
    "nb_snapshots_huge": patch(60, ">I", 0xFFFFFFFF),
    "snapshots_offset_past_eof": lambda b: (patch(60, ">I", 1)(b), patch(64, ">Q", 1 << 45)(b)),
    "snapshots_here": lambda b: (patch(60, ">I", 1000)(b), patch(64, ">Q", 0x30000)(b)),
    "cluster_bits_63": patch(20, ">I", 63),
    "cluster_bits_8": patch(20, ">I", 8),
    "refcount_order_9": patch(96, ">I", 9),
    "header_length_huge": patch(100, ">I", 0xFFFFFFF0),
    "extension_length_huge": patch(116, ">I", 0xFFFFFFF0),
    "backing_offset_past_cluster": lambda b: (patch(8, ">Q", 1 << 40)(b), patch(16, ">I", 9)(b)),
    "version_9": patch(4, ">I", 9),
    "l1_loops_to_itself": l2_loops,
    "reftable_entry_past_eof": lambda b: patch(struct.unpack_from(">Q", b, 48)[0], ">Q",
                                               1 << 54)(b),
    "truncated": lambda b: b.__delitem__(slice(80, None)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_give_damage_not_tracebacks(images: dict[str, Path], tmp_path: Path,
                                                    name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    buf = bytearray(images["v3_c64k"].read_bytes())
    HOSTILE[name](buf)
    path = tmp_path / f"{name}.qcow2"
    path.write_bytes(buf)
    root: Node = dissect(path)
    assert root.value("format") == "qcow2"
    assert root.all_damage(), name
    assert cli(path) == 2
    json.loads(capsys.readouterr().out)


def test_l1_of_4_mi_entries_sharing_one_l2_table(images: dict[str, Path], tmp_path: Path) -> None:
    """32 MiB of L1 (QEMU's limit) all naming one full L2 table: each table is decoded once,
    the references are counted in bulk (4 Mi x 8192 for the data cluster)."""
    buf = bytearray(images["v3_c64k"].read_bytes())
    n, l1 = 4 << 20, len(buf)
    buf += struct.pack(">Q", (1 << 63) | 0x40000) * n
    struct.pack_into(">IQ", buf, 36, n, l1)
    struct.pack_into(">8192Q", buf, 0x40000, *[(1 << 63) | 0x50000] * 8192)
    path = tmp_path / "shared.qcow2"
    path.write_bytes(buf)
    rt = dissect(path).find("refcount_table")
    assert rt is not None
    assert f"ERROR cluster 5 at 0x50000: refcount=1 reference={n * 8192}" in rt.damage


def test_many_extensions_and_self_referencing_tables(images: dict[str, Path],
                                                     tmp_path: Path) -> None:
    buf = bytearray(images["v3_c64k"].read_bytes())
    for i in range(4000):  # unknown extensions of 0 bytes fill cluster 0
        struct.pack_into(">II", buf, 112 + 8 * i, 0x12345678, 0)
    rt = struct.unpack_from(">Q", buf, 48)[0]
    struct.pack_into(">Q", buf, rt + 8, rt)  # a refcount block that is the refcount table
    path = tmp_path / "self.qcow2"
    path.write_bytes(buf)
    root = dissect(path)
    assert any("more than 1024 header extensions" in d for d in root.damage)
    assert any("overlaps" in d for _, _, d in root.all_damage())


def test_random_mutations_of_every_field_never_raise(images: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """What the conformance kit's hostile probe does to every dissected structure (its
    `targets`), in-process and seeded: extreme values and random bytes in every field and
    table entry the qcow2 tree shows."""
    from .conformance.test_hostile import EXTREMES, targets

    rng = random.Random(17)
    for name in ("v3_c64k", "snapshots", "bitmaps", "compressed", "v2", "refcount1"):
        pristine = images[name].read_bytes()
        spots = targets(dissect(images[name]), len(pristine))
        assert len(spots) > 20
        for k in range(60):
            buf = bytearray(pristine)
            for _ in range(rng.randint(1, 3)):
                at, size = rng.choice(spots)
                value = rng.choice(EXTREMES) if rng.random() < 0.6 else rng.getrandbits(8 * size)
                buf[at : at + size] = (value % (1 << 8 * size)).to_bytes(size, "big")
            path = tmp_path / f"{name}-{k}.qcow2"
            path.write_bytes(buf)
            dissect(path)
            path.unlink()


def test_copied_flag_mismatch_as_qemu_check_reports_it(images: dict[str, Path],
                                                       tmp_path: Path) -> None:
    path = tmp_path / "oflag.qcow2"
    shutil.copyfile(images["v3_c64k"], path)
    l1 = header(path)["l1_table_offset"]
    with path.open("r+b") as f:  # clear bit 63 of the first L1 entry (its L2 has refcount 1)
        f.seek(l1)
        entry = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        f.write(struct.pack(">Q", entry & ~(1 << 63)))
    code, text = qemu_check_lines(path)
    assert code == 2 and "OFLAG_COPIED L2 cluster" in text
    node = dissect(path).find("l1_table")
    assert node is not None and not node.verdict("copied_flags").ok  # type: ignore[union-attr]
    l2 = entry & 0x00FFFFFFFFFFFE00
    assert f"ERROR OFLAG_COPIED L2 table at {l2:#x}: copied flag 0, refcount 1" in node.damage
