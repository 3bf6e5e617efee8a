"""`diskspec dissect`: the forensic tree of VHD and VHDX images.

Images come from qemu-img/qemu-io (vpc fixed/dynamic, vhdx dynamic/fixed, with writes so
that qemu leaves log entries behind), from diskspec's own VHD engine (differencing) and from
the generated codecs (a VHDX differencing image, damaged copies). Every test checks what a
reader of the tree relies on: fields from the generated field tables at their absolute
offsets, checksum verdicts that match the codecs' own, damage named where it is, and a file
that is never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds
import diskspec.runtime.dissect as dissect_pkg
from diskspec.formats import vhd, vhdx
from diskspec.formats._codec import crc32c
from diskspec.runtime.cli import dissect as dcli
from diskspec.runtime.dissect import Node, Verdict, dissect, render
from diskspec.runtime.dissect import vhdx as dvhdx
from diskspec.runtime.errors import DiskspecError

from .conftest import require_tool, run

KiB = 1 << 10
MiB = 1 << 20
SLOT = 64 * KiB


# -- images ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pristine images, made once; tests that damage one work on a copy (`copy_of`)."""
    qemu_img, qemu_io = require_tool("qemu-img"), require_tool("qemu-io")
    d = tmp_path_factory.mktemp("dissect")
    out: dict[str, Path] = {}

    def make(name: str, fmt: str, size: str, options: str = "",
             writes: tuple[tuple[int, int, int], ...] = ()) -> None:
        path = d / name
        args = [qemu_img, "create", "-q", "-f", fmt] + (["-o", options] if options else [])
        run(*args, str(path), size)
        if writes:
            cmds = []
            for pattern, offset, length in writes:
                cmds += ["-c", f"write -P {pattern:#x} {offset} {length}"]
            run(qemu_io, "-f", fmt, *cmds, str(path))
        out[name] = path

    make("fixed.vhd", "vpc", "16M", "subformat=fixed", ((0x11, 0, 64 * KiB),))
    make("dynamic.vhd", "vpc", "16M", "", ((0x5A, 0, 4 * KiB), (0x33, 6 * MiB, 64 * KiB)))
    make("dynamic.vhdx", "vhdx", "64M")
    make("written.vhdx", "vhdx", "64M", "",
         ((0x5A, 0, 4 * KiB), (0x33, 20 * MiB, MiB), (0x44, 40 * MiB, 4 * KiB)))
    make("fixed.vhdx", "vhdx", "24M", "subformat=fixed,block_state_zero=off",
         ((0x77, MiB, 64 * KiB),))
    make("fixed-zero.vhdx", "vhdx", "16M", "subformat=fixed")
    make("image.qcow2", "qcow2", "16M")
    with ds.create(d / "child.vhd", "vpc", None, subformat="differencing",
                   parent=out["dynamic.vhd"]) as child:
        child.seek(2 * MiB + 4096)
        child.write(b"\xc4" * 8192)
    out["child.vhd"] = d / "child.vhd"
    out["child.vhdx"] = make_vhdx_child(out["dynamic.vhdx"], d / "child.vhdx")
    raw = d / "random.raw"
    raw.write_bytes(random.Random(5).randbytes(300 * KiB))
    out["random.raw"] = raw
    return out


@pytest.fixture
def copy_of(images: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(images[name], target)
        return target

    return copy


LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913").bytes_le
LOCATOR_ITEM = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
LINKAGE = "{0D4E1A4B-8C3F-4A57-9F3E-2B1C6D5E7F80}"


def make_vhdx_child(parent: Path, target: Path) -> Path:
    """A differencing VHDX from a qemu dynamic one (qemu cannot make them): has_parent set,
    a parent locator item built with the codecs, one partially present block and its
    sector bitmap block appended at the end."""
    data = bytearray(parent.read_bytes())
    meta = region_offset(data, dvhdx.METADATA_REGION)
    bat = region_offset(data, dvhdx.BAT_REGION)
    table = vhdx.MetadataTableHeader.parse(data, meta)
    entries = [vhdx.MetadataTableEntry.parse(data, meta + 32 + 32 * i)
               for i in range(table.entry_count)]
    params = next(e for e in entries if uuid.UUID(bytes_le=e.item_id) ==
                  uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"))
    fp = vhdx.FileParameters.parse(data, meta + params.offset)
    fp.has_parent = 1
    data[meta + params.offset : meta + params.offset + 8] = fp.build()
    pairs = [("parent_linkage", LINKAGE), ("relative_path", "..\\base\\parent.vhdx"),
             ("absolute_win32_path", "\\\\?\\C:\\vms\\base\\parent.vhdx")]
    head = 20 + 12 * len(pairs)
    blob = b""
    kv = []
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        kv.append(vhdx.ParentLocatorEntry.new(key_offset=head + len(blob), key_length=len(k),
                                              value_offset=head + len(blob) + len(k),
                                              value_length=len(v)))
        blob += k + v
    item = vhdx.ParentLocatorHeader.new(locator_type=LOCATOR_TYPE,
                                        key_value_count=len(pairs)).build()
    item += b"".join(e.build() for e in kv) + blob
    item_at = 0x10100
    data[meta + item_at : meta + item_at + len(item)] = item
    entry = vhdx.MetadataTableEntry.new(item_id=LOCATOR_ITEM, offset=item_at, length=len(item),
                                        is_required=1)
    data[meta + 32 + 32 * len(entries) : meta + 64 + 32 * len(entries)] = entry.build()
    table.entry_count += 1
    data[meta : meta + 32] = table.build()
    # block 1 partially present at the end of the file, chunk 0's bitmap after it
    block_at = len(data)
    data += b"\xab" * (8 * MiB)
    bitmap_at = len(data)
    data += b"\x01" + bytes(MiB - 1)
    cr = (1 << 23) * 512 // (8 * MiB)
    struct.pack_into("<Q", data, bat + 8 * 1, block_at | 7)
    struct.pack_into("<Q", data, bat + 8 * cr, bitmap_at | 6)
    target.write_bytes(data)
    return target


def region_offset(data: bytes | bytearray, guid: str) -> int:
    table = vhdx.RegionTable.parse(data, 3 * SLOT)
    return next(e.file_offset for e in table.entries
                if str(uuid.UUID(bytes_le=e.guid)).upper() == guid)


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def fix_crc(path: Path, offset: int, length: int) -> None:
    """Recompute a VHDX CRC-32C (checksum at +4) after a deliberate edit."""
    with open(path, "r+b") as f:
        f.seek(offset)
        buf = bytearray(f.read(length))
        buf[4:8] = bytes(4)
        struct.pack_into("<I", buf, 4, crc32c(buf))
        f.seek(offset)
        f.write(buf)


def verdict(node: Node, name: str = "checksum") -> Verdict:
    v = node.verdict(name)
    assert v is not None, f"{node.name} has no {name} verdict"
    return v


def meaning(node: Node | None, name: str) -> str:
    assert node is not None
    f = node.field(name)
    assert f is not None, f"{node.name} has no field {name}"
    return str(f.meaning)


def top(root: Node) -> dict[str, Node]:
    return {n.name: n for n in root.children}


def damage_text(root: Node) -> str:
    return "\n".join(f"{p}: {m}" for p, _, m in root.all_damage())


def cli(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = dcli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def check_tree(root: Node) -> None:
    """Invariants of every tree: children sorted, inside the file, gaps between the rest."""
    offsets = [n.offset for n in root.children]
    assert offsets == sorted(offsets)
    for _path, node in root.walk():
        assert node.offset >= 0 and node.size >= 0
        assert [c.offset for c in node.children] == sorted(c.offset for c in node.children)
    for n in root.children:  # a structure past the end of the file is listed with size 0
        assert n.end <= root.size or n.size == 0, n.name
    covered = 0
    for n in sorted(root.children, key=lambda n: n.offset):
        assert n.offset >= covered or n.kind != "gap"
        if n.offset <= root.size:
            covered = max(covered, n.end)
    assert covered == root.size


# -- VHD -------------------------------------------------------------------------------------


def test_vhd_fixed(images: dict[str, Path]) -> None:
    root = dissect(images["fixed.vhd"])
    check_tree(root)
    assert root.value("format") == "vpc" and root.value("subformat") == "fixed"
    assert [n.name for n in root.children] == ["data", "footer"]
    footer = top(root)["footer"]
    size = images["fixed.vhd"].stat().st_size
    assert footer.offset == size - 512 and footer.size == 512
    raw = images["fixed.vhd"].read_bytes()[-512:]
    v = verdict(footer)
    assert v.ok and v.stored == v.computed == vhd.Footer.checksum_of(raw)
    assert v.algorithm == "ones-complement-sum"
    # every field of the generated table, at its absolute offset (nested record flattened)
    by_name = {f.name: f for f in footer.fields}
    for row in vhd.Footer.FIELDS:
        assert row.offset is not None
        if row.name == "disk_geometry":
            for sub in vhd.DiskGeometry.FIELDS:
                assert sub.offset is not None
                f = by_name[f"disk_geometry.{sub.name}"]
                assert f.offset == footer.offset + row.offset + sub.offset
            continue
        assert by_name[row.name].offset == footer.offset + row.offset
        assert by_name[row.name].size == row.size
        assert by_name[row.name].doc == row.doc
    assert by_name["disk_type"].meaning == "FIXED"
    assert by_name["creator_application"].meaning == "QEMU"
    assert by_name["cookie"].meaning == "magic ok"
    assert not root.all_damage()


def test_vhd_dynamic(images: dict[str, Path]) -> None:
    root = dissect(images["dynamic.vhd"], bat=True)
    check_tree(root)
    names = [n.name for n in root.children if n.kind != "gap"]
    assert names[:3] == ["footer_copy", "dynamic_header", "bat"]
    assert names[-1] == "footer"
    header = top(root)["dynamic_header"]
    assert verdict(header).ok
    assert len([c for c in header.children if c.kind == "parent_locator"]) == 8
    bat = top(root)["bat"]
    assert bat.value("allocated") == 2  # blocks 0 and 3 (6 MiB / 2 MiB)
    blocks = [n for n in root.children if n.kind == "data_blocks"]
    assert sum(int(n.value("count") or 0) for n in blocks) == 2
    assert bat.table is not None and bat.table.count == bat.value("entries")
    rows = list(bat.table)
    assert rows[0][3] == "allocated" and rows[1][3] == "unallocated"
    assert {r[0] for r in rows if r[3] == "allocated"} == {0, 3}
    assert not root.all_damage()


def test_vhd_differencing_locators(images: dict[str, Path]) -> None:
    root = dissect(images["child.vhd"])
    check_tree(root)
    assert root.value("subformat") == "differencing"
    header = top(root)["dynamic_header"]
    assert header.value("parent_unicode_name") == "dynamic.vhd"
    used = [c for c in header.children if c.value("platform_code") != 0]
    assert {meaning(c, "platform_code") for c in used} >= {"W2KU", "W2RU"}
    paths = {str(c.value("path")) for c in used}
    assert any(p.endswith("dynamic.vhd") for p in paths)
    data = [n for n in root.children if n.kind == "parent_locator_data"]
    assert len(data) == len(used)
    assert all("dynamic.vhd" in meaning(n, "data") for n in data)
    assert not root.all_damage()


# -- VHDX ------------------------------------------------------------------------------------


def current_slot(data: bytes) -> int:
    seqs = {n: int(vhdx.Header.parse(data, n * SLOT).sequence_number) for n in (1, 2)}
    return max((1, 2), key=lambda n: (seqs[n], -n))


def test_vhdx_dynamic_structures(images: dict[str, Path]) -> None:
    path = images["written.vhdx"]
    data = path.read_bytes()
    root = dissect(path)
    check_tree(root)
    t = top(root)
    assert root.value("format") == "vhdx" and root.value("subformat") == "dynamic"
    assert root.value("virtual_size") == 64 * MiB
    for name in ("file_identifier", "header1", "header2", "region_table1", "region_table2",
                 "log", "bat", "metadata"):
        assert name in t, name
    # both headers with their CRC; the current one is the valid one with the higher sequence
    for n in (1, 2):
        node = t[f"header{n}"]
        v = node.verdict("checksum")
        assert v is not None and v.ok and v.algorithm == "crc32c"
        assert v.computed == vhdx.Header.checksum_of(data, n * SLOT)
        assert [f.name for f in node.fields] == [r.name for r in vhdx.Header.FIELDS]
        assert [f.offset for f in node.fields] == [n * SLOT + (r.offset or 0)
                                                   for r in vhdx.Header.FIELDS]
    cur = current_slot(data)
    assert root.value("current_header") == cur
    assert any("current header" in note for note in t[f"header{cur}"].notes)
    for n in (1, 2):
        rt = t[f"region_table{n}"]
        assert verdict(rt).ok
        guids = {meaning(c, "guid") for c in rt.children}
        assert any("(bat region)" in str(g) for g in guids)
        assert any("(metadata region)" in str(g) for g in guids)
    meta = t["metadata"]
    items = {c.name: c for c in meta.children}
    assert items["virtual_disk_size"].value("virtual_disk_size") == 64 * MiB
    assert items["logical_sector_size"].value("logical_sector_size") == 512
    assert items["file_parameters"].value("block_size") == 8 * MiB
    has_parent = items["file_parameters"].field("has_parent")
    assert has_parent is not None and has_parent.bits == (1, 1)
    assert len([c for c in items["table"].children if c.kind == "metadata_table_entry"]) == 5
    bat = t["bat"]
    assert bat.value("chunk_ratio") == (1 << 23) * 512 // (8 * MiB)
    assert bat.value("payload.FULLY_PRESENT") == 3  # blocks 0, 2 and 5
    assert bat.value("payload.ZERO") == 5
    runs = [n for n in root.children if n.kind == "payload_blocks"]
    assert sum(int(n.value("count") or 0) for n in runs) == 3
    assert not root.all_damage()


def test_vhdx_log_entries_left_by_qemu(images: dict[str, Path]) -> None:
    path = images["written.vhdx"]
    data = path.read_bytes()
    log = top(dissect(path))["log"]
    assert log.value("dirty") is False and log.value("replay_needed") is False
    entries = [c for c in log.children if c.kind == "log_entry"]
    assert len(entries) >= 3  # qemu logs one BAT update per allocated block
    assert log.value("entries_found") == len(entries) == log.value("entries_valid")
    assert log.value("entries_current_guid") == 0  # the header's log GUID is zero
    for e in entries:
        v = e.verdict("checksum")
        assert v is not None and v.ok and v.stored == v.computed
        # the verdict agrees with a CRC computed here over entry_length bytes
        n = int(e.value("entry_length") or 0)
        buf = bytearray(data[e.offset : e.offset + n])
        buf[4:8] = bytes(4)
        assert crc32c(buf) == v.stored
        # a file written in one session only: nothing suggests an earlier one
        assert any("left by writes already applied" in note for note in e.notes)
        assert not any("earlier session" in note for note in e.notes + log.notes)
        desc = [c for c in e.children if c.kind == "data_descriptor"]
        assert desc and all("in bat" in meaning(c, "file_offset") for c in desc)
        assert [c for c in e.children if c.kind == "data_sector"]
    seqs = [e.value("sequence_number") for e in entries]
    assert len(set(seqs)) == len(seqs)
    assert log.value("newest_sequence") is not None


def test_vhdx_fixed(images: dict[str, Path]) -> None:
    root = dissect(images["fixed.vhdx"])
    check_tree(root)
    assert root.value("subformat") == "fixed"
    bat = top(root)["bat"]
    assert bat.value("payload.FULLY_PRESENT") == 3
    assert "sector_bitmap_entries" in {f.name for f in bat.fields}
    assert not root.all_damage()
    zero = dissect(images["fixed-zero.vhdx"])  # qemu's default fixed image: ZERO blocks
    assert zero.value("subformat") == "fixed"
    assert top(zero)["bat"].value("payload.ZERO") == 2
    assert not zero.all_damage()


def test_vhdx_differencing_parent_locator(images: dict[str, Path]) -> None:
    root = dissect(images["child.vhdx"], bat=True)
    check_tree(root)
    assert root.value("subformat") == "differencing"
    loc = top(root)["metadata"].find("parent_locator")
    assert loc is not None
    assert loc.value("parent_linkage") == LINKAGE
    assert loc.value("relative_path") == "..\\base\\parent.vhdx"
    assert "VHDX parent locator" in meaning(loc.find("header"), "locator_type")
    keys = [c.value("key") for c in loc.children if c.kind == "parent_locator_entry"]
    assert keys == ["parent_linkage", "relative_path", "absolute_win32_path"]
    bat = top(root)["bat"]
    cr = (1 << 23) * 512 // (8 * MiB)
    assert bat.value("entries") == cr + 1  # differencing: the chunk's bitmap entry included
    assert bat.value("payload.PARTIALLY_PRESENT") == 1
    assert bat.value("sector_bitmap.PRESENT") == 1
    assert bat.table is not None
    rows = list(bat.table)
    assert rows[cr][1] == "sector_bitmap" and rows[cr][4] == "PRESENT"
    assert rows[1][1] == "payload" and rows[1][4] == "PARTIALLY_PRESENT"
    kinds = {n.kind for n in root.children}
    assert {"payload_blocks", "sector_bitmap_blocks"} <= kinds
    assert not root.all_damage(), damage_text(root)


@pytest.mark.parametrize("name", ["dynamic.vhdx", "written.vhdx", "child.vhdx", "fixed.vhdx"])
def test_bulk_bat_count_matches_entry_by_entry(images: dict[str, Path], name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def fields(root: Node) -> list[tuple[str, Any]]:
        return [(f.name, f.value) for f in top(root)["bat"].fields]

    fast = fields(dissect(images[name]))
    monkeypatch.setattr(dvhdx, "_count_plain", lambda *args: False)
    assert fields(dissect(images[name])) == fast


def test_vhdx_differencing_made_by_the_engine(images: dict[str, Path], tmp_path: Path) -> None:
    parent = images["dynamic.vhdx"]
    with ds.create(tmp_path / "c.vhdx", "vhdx", None, subformat="differencing",
                   parent=parent) as child:
        child.seek(MiB)
        child.write(b"\x5e" * 4096)
    root = dissect(tmp_path / "c.vhdx")
    check_tree(root)
    assert root.value("subformat") == "differencing" and not root.all_damage()
    data = parent.read_bytes()
    linkage = vhdx.Header.parse(data, current_slot(data) * SLOT).data_write_guid
    loc = top(root)["metadata"].find("parent_locator")
    assert loc is not None
    assert str(loc.value("parent_linkage")).strip("{}").upper() == \
        str(uuid.UUID(bytes_le=linkage)).upper()
    assert top(root)["bat"].value("sector_bitmap.PRESENT") == 1


def test_known_guids_match_the_generated_docs() -> None:
    docs = " ".join(str(cls.__doc__) for cls in vhdx.TYPES.values())
    for guid in [*dvhdx.REGIONS, *dvhdx.ITEMS, *dvhdx.OTHER_ITEMS, *dvhdx.LOCATOR_TYPES]:
        assert guid in docs, guid
    for guid, name in dvhdx.ITEMS.items():
        assert name in vhdx.TYPES
        assert guid in str(vhdx.TYPES[name].__doc__) or name == "chs_parameters" and \
            guid in str(vhdx.ChsParameters.__doc__)


# -- damage ----------------------------------------------------------------------------------


def test_vhdx_bad_header_checksum(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    cur = current_slot(path.read_bytes())
    poke(path, cur * SLOT + 0x100, b"\xff")  # in the reserved area: covered by the CRC
    root = dissect(path)
    node = top(root)[f"header{cur}"]
    v = node.verdict("checksum")
    assert v is not None and not v.ok and v.stored != v.computed
    assert any("checksum bad" in d for d in node.damage)
    other = 3 - cur
    assert root.value("current_header") == other  # the other, valid header takes over
    assert not top(root)["bat"].damage and top(root)["log"].value("entries_valid")
    doc = render.document(root)
    assert doc["damaged"] and any(d["path"].endswith(f"header{cur}") for d in doc["damage"])


def test_vhdx_both_headers_bad_still_goes_on(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    poke(path, SLOT + 0x200, b"\x01")
    poke(path, 2 * SLOT, b"HEAD")
    poke(path, 3 * SLOT + 0x100, b"\x01")  # region table 1 bad too: table 2 is used
    root = dissect(path)
    text = damage_text(root)
    assert "no valid header" in text
    assert "header2: signature bad" in text
    assert root.value("region_table_used") == 2
    assert top(root)["metadata"].find("file_parameters") is not None


def test_vhdx_truncated_log(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    os.truncate(path, MiB + 0x2800)  # inside the second log entry
    root = dissect(path)
    check_tree(root)
    log = top(root)["log"]
    assert any("log region is truncated" in d for d in log.damage)
    truncated = [e for e in log.children if any("truncated" in d for d in e.damage)]
    assert truncated and verdict(truncated[0]).computed is None
    assert "runs past the end of the file" in damage_text(root)


def test_vhdx_log_entry_bad_crc_and_dirty_log(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    data = path.read_bytes()
    first = vhdx.LogEntryHeader.parse(data, MiB)
    last_at = max(MiB + p for p in range(0, MiB, 4096) if data[MiB + p : MiB + p + 4] == b"loge")
    last = vhdx.LogEntryHeader.parse(data, last_at)
    # make the log dirty with the last entry's GUID: that entry must be replayed
    cur = current_slot(data)
    poke(path, cur * SLOT + 48, last.log_guid)
    fix_crc(path, cur * SLOT, 4096)
    poke(path, MiB + first.entry_length - 100, b"\x99")  # break the first entry's data
    root = dissect(path)
    log = top(root)["log"]
    assert log.value("dirty") is True and log.value("replay_needed") is True
    assert log.value("entries_current_guid") == 1
    assert "active_sequence" in {f.name for f in log.fields}
    entries = [e for e in log.children if e.kind == "log_entry"]
    assert not verdict(entries[0]).ok
    assert any("must be replayed" in n for n in entries[-1].notes)
    assert any("log is dirty" in n for n in root.notes)


def test_log_entry_wrapping_at_the_end_of_the_log(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    data = path.read_bytes()
    first = vhdx.LogEntryHeader.parse(data, MiB)
    assert first.entry_length == 8192
    entry = data[MiB : MiB + 8192]
    # the same entry, moved so that its second sector wraps to the start of the log
    poke(path, 2 * MiB - 4096, entry[:4096])
    poke(path, MiB, entry[4096:])
    log = top(dissect(path))["log"]
    wrapped = next(e for e in log.children if e.offset == 2 * MiB - 4096)
    v = verdict(wrapped)
    assert v.ok and v.covers == (2 * MiB - 4096, 8192) and "wraps" in v.detail
    assert any("wraps" in n for n in wrapped.notes)
    sector = next(c for c in wrapped.children if c.kind == "data_sector")
    assert sector.offset == MiB and not sector.damage


def test_bat_entry_past_the_end(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    bat = region_offset(path.read_bytes(), dvhdx.BAT_REGION)
    poke(path, bat + 8 * 3, struct.pack("<Q", (100_000 << 20) | 6))
    root = dissect(path, bat=True)
    node = top(root)["bat"]
    assert any("payload entry 3" in d and "past the end" in d for d in node.damage)
    assert node.table is not None and node.table.row(3)[-1] == "past the end of the file"
    assert root.value("format") == "vhdx"
    # the same for VHD
    vpath = copy_of("dynamic.vhd")
    poke(vpath, 1536 + 4, struct.pack(">I", 0x0100_0000))
    vroot = dissect(vpath)
    assert any("entry 1 points past the end" in d for d in top(vroot)["bat"].damage)


def test_vhd_bad_footer_uses_the_copy(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("dynamic.vhd")
    size = path.stat().st_size
    poke(path, size - 512 + 30, b"\x00")  # inside creator_application
    root = dissect(path)
    footer = top(root)["footer"]
    v = footer.verdict("checksum")
    assert v is not None and not v.ok
    assert any("copy at offset 0" in n for n in root.notes)
    assert top(root)["bat"].value("allocated") == 2


def test_vhd_bad_dynamic_header_checksum(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("dynamic.vhd")
    poke(path, 512 + 800, b"\x01")
    root = dissect(path)
    assert any("checksum bad" in d for d in top(root)["dynamic_header"].damage)


def test_vhd_truncated_file(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("dynamic.vhd")
    os.truncate(path, 1 * MiB)  # inside block 0: the end footer is gone
    root = dissect(path)
    check_tree(root)
    text = damage_text(root)
    assert "no footer" in text
    assert "past the end" in text
    assert any("copy at offset 0" in n for n in root.notes)


def test_hostile_counts_and_sizes_are_bounded(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    data = path.read_bytes()
    meta = region_offset(data, dvhdx.METADATA_REGION)
    for rt in (3 * SLOT, 4 * SLOT):  # absurd counts with valid checksums
        poke(path, rt + 8, struct.pack("<I", 0xFFFFFFFF))
        fix_crc(path, rt, SLOT)
    for h in (SLOT, 2 * SLOT):
        poke(path, h + 68, struct.pack("<I", 0xFFF00000))  # a 4 GiB log in a 24 MiB file
        fix_crc(path, h, 4096)
    root = dissect(path)
    text = damage_text(root)
    assert "entry_count" in text and "log region is truncated" in text
    # metadata claiming a 64 TiB disk of 1 MiB blocks: the BAT region cannot hold it
    path2 = copy_of("dynamic.vhdx")
    params = meta + 0x10000
    poke(path2, params, struct.pack("<I", MiB))
    poke(path2, params + 8, struct.pack("<Q", 64 << 40))
    poke(path2, meta + 10, struct.pack("<H", 0xFFFF))
    root2 = dissect(path2)
    text2 = damage_text(root2)
    assert "too small" in text2 and "does not fit the 64 KiB table" in text2
    # a VHD whose header claims 2^32-1 BAT entries
    vpath = copy_of("dynamic.vhd")
    poke(vpath, 512 + 28, b"\xff\xff\xff\xff")
    assert "runs past the end of the file" in damage_text(dissect(vpath))


def test_hostile_log_of_overlapping_entries(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("written.vhdx")
    fake = vhdx.LogEntryHeader.new(entry_length=MiB - 4096, sequence_number=1,
                                   descriptor_count=100_000).build()
    sector = fake + bytes(4096 - len(fake))
    poke(path, MiB, sector * 256)  # 256 entries, each claiming almost the whole log
    log = top(dissect(path))["log"]
    assert log.value("entries_found") == 256 and log.value("entries_valid") == 0
    assert any("not verified" in n for e in log.children for n in e.notes)


def test_random_damage_never_raises(copy_of: Callable[[str], Path]) -> None:
    rng = random.Random(1234)
    for name in ("written.vhdx", "dynamic.vhd", "child.vhdx"):
        path = copy_of(name)
        pristine = path.read_bytes()
        hot = [0, SLOT, 2 * SLOT, 3 * SLOT, 4 * SLOT, MiB, 2 * MiB, 3 * MiB] \
            if name.endswith("vhdx") else [0, 512, 1536, len(pristine) - 512]
        for _ in range(12):
            data = bytearray(pristine)
            for _ in range(rng.randint(1, 24)):
                at = rng.choice(hot) + rng.randrange(0, 256)
                data[at] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(len(data))]
            path.write_bytes(data)
            root = dissect(path)  # must finish, whatever the bytes
            render.document(root)
            check_tree(root)


# -- gaps and remnants -------------------------------------------------------------------------


def test_remnants_in_gaps(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("dynamic.vhdx")
    poke(path, 0x60000, b"conectix" + b"\x01" * 100)  # in the reserved part of the header section
    root = dissect(path)
    gap = next(n for n in root.children if n.kind == "gap" and n.offset <= 0x60000 < n.end)
    assert gap.value("nonzero_ranges") == 1
    remnant = gap.children[0]
    assert remnant.kind == "remnant" and remnant.offset == 0x60000 and remnant.size == 108
    assert "a vhd footer at 0x60000" in str(remnant.value("looks_like"))
    zero_gaps = [n for n in root.children if n.kind == "gap" and n is not gap]
    assert zero_gaps and all(n.value("nonzero_ranges") == 0 for n in zero_gaps)
    sampled = dissect(path, gap_budget=64 * KiB)
    assert any(n.value("sampled") for n in sampled.children if n.kind == "gap")
    unscanned = dissect(path, scan_gaps=False)
    assert all(n.value("scanned_bytes") is None for n in unscanned.children if n.kind == "gap")


def test_raw_and_other_formats(images: dict[str, Path], tmp_path: Path) -> None:
    root = dissect(images["random.raw"])
    assert root.value("format") == "raw" and root.value("subformat") is None
    assert any("raw or unknown" in n for n in root.notes)
    assert [n.kind for n in root.children] == ["data"]
    assert dissect(images["image.qcow2"]).value("format") == "qcow2"  # test_dissect_qcow2.py
    vmdk = tmp_path / "image.vmdk"
    vmdk.write_bytes(b"KDMV" + bytes(4092))
    q = dissect(vmdk)
    assert q.value("format") == "raw" and any("vmdk" in n for n in q.notes)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert dissect(empty).value("format") == "raw"
    with pytest.raises(DiskspecError):
        dissect(tmp_path / "missing")
    with pytest.raises(DiskspecError):
        dissect(tmp_path)


# -- read-only ---------------------------------------------------------------------------------


def file_state(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def opens_recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    flags: list[int] = []
    real = os.open

    def spy(path: Any, flag: int, *args: Any, **kwargs: Any) -> int:
        flags.append(flag)
        return real(path, flag, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    yield flags


def test_never_writes(images: dict[str, Path], copy_of: Callable[[str], Path],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("written.vhdx", "dynamic.vhd", "fixed.vhd", "child.vhdx"):
        path = copy_of(name)
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        before = file_state(path)
        with opens_recorded(monkeypatch) as flags:
            dissect(path, bat=True)
            assert cli(path, "--output=json", "--bat")[0] == 0
            assert cli(path, "--plain")[0] == 0
            struct_name = "header1" if name.endswith(".vhdx") else "footer"
            assert cli(path, "--hexdump", struct_name)[0] == 0
            assert cli(path, "--hexdump", struct_name, "--output=json")[0] == 0
        assert flags and all(f & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) == 0
                             for f in flags)
        assert file_state(path) == before


# -- output ----------------------------------------------------------------------------------

DOC_KEYS = {"schema", "schema_version", "path", "format", "subformat", "file_size",
            "virtual_size", "damaged", "damage", "root"}
NODE_KEYS = {"name", "path", "kind", "offset", "size", "summary", "fields", "verdicts", "notes",
             "damage", "table", "children"}
FIELD_KEYS = {"name", "offset", "size", "value", "meaning", "doc", "bits"}
VERDICT_KEYS = {"name", "ok", "algorithm", "stored", "computed", "offset", "covers", "detail"}


def walk_json(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from walk_json(child)


@pytest.mark.parametrize("name", ["written.vhdx", "dynamic.vhd", "fixed.vhd", "random.raw",
                                  "child.vhdx"])
def test_json_schema(images: dict[str, Path], name: str) -> None:
    rc, out, err = cli(images[name], "--output=json", "--bat")
    assert rc == 0 and not err
    doc = json.loads(out)
    assert set(doc) == DOC_KEYS
    assert doc["schema"] == "diskspec-dissect" and doc["schema_version"] == 1
    assert doc["file_size"] == images[name].stat().st_size
    assert isinstance(doc["damaged"], bool) and doc["damage"] == []
    for node in walk_json(doc["root"]):
        assert set(node) == NODE_KEYS
        assert node["path"].endswith(node["name"])
        for f in node["fields"]:
            assert set(f) == FIELD_KEYS
            assert isinstance(f["value"], int | str | bool | type(None))
        for v in node["verdicts"]:
            assert set(v) == VERDICT_KEYS
        if node["table"] is not None:
            assert set(node["table"]) == {"columns", "count", "rows"}
            assert len(node["table"]["rows"]) == node["table"]["count"]
    # the streamed document equals the in-memory one
    assert doc == json.loads(json.dumps(render.document(dissect(images[name], bat=True))))
    schema = (Path(dissect_pkg.__file__).parent / "SCHEMA.md").read_text()
    for key in DOC_KEYS | NODE_KEYS | FIELD_KEYS | VERDICT_KEYS:
        assert f"`{key}`" in schema, key


def test_json_names_damage(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("dynamic.vhd")
    poke(path, 512 + 800, b"\x01")
    doc = json.loads(cli(path, "--output=json")[1])
    assert doc["damaged"] is True
    hit = [d for d in doc["damage"] if d["path"].endswith("dynamic_header")]
    assert hit and hit[0]["offset"] == 512 and "checksum bad" in hit[0]["message"]


def test_human_output(images: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")  # in the test extras; the plain fallback is tested below
    rc, out, _ = cli(images["written.vhdx"], "--color=never")
    assert rc == 0
    for text in ("header1", "region_table2", "checksum (crc32c) ok", "log", "FULLY_PRESENT",
                 "file_parameters", "current header"):
        assert text in out, text
    rc, plain, _ = cli(images["written.vhdx"], "--plain")
    assert rc == 0 and "├── " in plain and "sequence_number" in plain
    brief = cli(images["written.vhdx"], "--plain", "--brief")[1]
    assert "sequence_number" not in brief and "header2" in brief
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # how dcli looks for rich
    rc, fallback, _ = cli(images["dynamic.vhd"])
    assert rc == 0 and "├── " in fallback and "dynamic_header" in fallback


def test_hexdump(images: dict[str, Path]) -> None:
    path = images["written.vhdx"]
    data = path.read_bytes()
    rc, out, _ = cli(path, "--hexdump", "header1")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("header1 [header] at 0x10000, 4096 bytes")
    for row in vhdx.Header.FIELDS:  # one line starts at every field boundary
        assert row.offset is not None
        line = next(x for x in lines if re.match(rf"0x0*{SLOT + row.offset:x}\s+{row.name}\b", x))
        first = data[SLOT + row.offset : SLOT + row.offset + min(16, row.size or 16)]
        assert " ".join(f"{b:02x}" for b in first) in line
    assert any(x.strip() == "*" for x in lines)  # the zero reserved area collapses
    # bit fields are listed under their group
    out = cli(path, "--hexdump", "metadata/table/entry[0]")[1]
    assert "is_required = 1" in out and "bits 2-2" in out
    # JSON: the segments put back together are the structure's bytes
    doc = json.loads(cli(path, "--hexdump", "region_table1", "--output=json")[1])
    segs = doc["hexdump"]["segments"]
    assert bytes.fromhex("".join(s["hex"] for s in segs)) == data[3 * SLOT : 4 * SLOT]
    assert [s["name"] for s in segs[:4]] == ["signature", "checksum", "entry_count", "reserved"]
    # BAT entries are named from their values
    out = cli(path, "--hexdump", "bat", "--hexdump-limit", "16")[1]
    assert "[0] block 0 FULLY_PRESENT" in out and "more bytes not shown" in out
    rc, _, err = cli(path, "--hexdump", "no-such-thing")
    assert rc == 1 and "no structure 'no-such-thing'" in err and "header1" in err


def test_cli_errors(tmp_path: Path) -> None:
    rc, _, err = cli(tmp_path / "missing.vhd")
    assert rc == 1 and "no such file" in err and "Traceback" not in err
    rc, _, err = cli("--output=xml", tmp_path)
    assert rc == 1 and err.startswith("diskspec dissect:")
    rc, out, _ = cli("--help")
    assert rc == 0 and "--hexdump" in out


def test_importable_entry_points(images: dict[str, Path]) -> None:
    # the package is callable (its module class is swapped at import: invisible to mypy)
    root = dissect_pkg(images["fixed.vhd"])  # type: ignore[operator]
    assert isinstance(root, Node) and root.value("format") == "vpc"
    assert dissect_pkg.dissect is dissect
    assert callable(dcli.main)
    # and as a name of the runtime, without importing the subpackage first
    code = ("import diskspec.runtime as r, sys; assert 'diskspec.runtime.dissect' not in sys.modules; "
            f"print(r.dissect({str(images['fixed.vhd'])!r}).value('format'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout == "vpc\n"
