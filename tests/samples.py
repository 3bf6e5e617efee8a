"""Real structures to test codecs on: taken from images qemu-img makes (vpc, vhdx, qcow2,
qed) or built by hand from the spec sheets' layout tables (fvd, add-cow).

Each sample names a type of a spec, the buffer, the offset and the params; the oracle tests
parse it with our codec, the official Kaitai compiler's code and the construct backend.
"""

from __future__ import annotations

import re
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from diskspec.formats import add_cow, fvd, qcow2, qed, vhd, vhdx


@dataclass
class Sample:
    spec: str  # meta id, e.g. "vhd"
    type_path: tuple[str, ...]
    data: bytes
    offset: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.spec}:{'::'.join(self.type_path) or '/'}:{self.label}@{self.offset:#x}"


def qemu_image(workdir: Path, fmt: str, size: str, options: str = "",
               writes: tuple[tuple[int, int, int], ...] = ()) -> bytes:
    """An image made by qemu-img (and written by qemu-io), returned as bytes."""
    path = workdir / f"{fmt}-{options.replace(',', '_').replace('=', '-') or 'default'}-{size}"
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if options:
        args += ["-o", options]
    subprocess.run([*args, str(path), size], check=True, capture_output=True)
    for pattern, offset, length in writes:
        subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}",
                        str(path)], check=True, capture_output=True)
    return path.read_bytes()


def vhd_samples(workdir: Path) -> Iterator[Sample]:
    for options in ("subformat=fixed", "subformat=dynamic", "subformat=dynamic,force_size=on"):
        data = qemu_image(workdir, "vpc", "10M", options, writes=((0x5A, 2 << 20, 8192),))
        tail = len(data) - 512
        yield Sample("vhd", ("footer",), data, tail, label=options)
        yield Sample("vhd", ("disk_geometry",), data, tail + 56, label=options)
        yield Sample("vhd", (), data, label=options)
        if "dynamic" in options:
            header = vhd.DynamicHeader.parse(data, 512)
            yield Sample("vhd", ("dynamic_header",), data, 512, label=options)
            yield Sample("vhd", ("parent_locator",), data, 512 + 576, label=options)
            yield Sample("vhd", ("bat",), data, header.table_offset,
                         {"num_entries": header.max_table_entries}, label=options)
    # a differencing header with a parent name and locators, built from the codecs
    child = vhd.DynamicHeader.new(
        data_offset=2**64 - 1, table_offset=1536, header_version=0x10000, max_table_entries=3,
        block_size=1 << 21, parent_unique_id=bytes(range(16)), parent_timestamp=12345,
        parent_unicode_name="parent.vhd".ljust(256, "\0"),
        parent_locators=[vhd.ParentLocator(vhd.PlatformCode.W2KU, 512, 40, 0, 4096),
                         vhd.ParentLocator(vhd.PlatformCode.W2RU, 512, 24, 0, 4608)]
        + [vhd.ParentLocator.new() for _ in range(6)]).update_checksum()
    yield Sample("vhd", ("dynamic_header",), child.build(), label="differencing")


def run(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, cwd=cwd)


def qemu_io(path: Path, fmt: str, *commands: str) -> None:
    """Run qemu-io commands (e.g. "write -P 0x5a 0 4k") on an image, in one process."""
    args: list[str | Path] = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    run(*args, path, cwd=path.parent)


def parse(module: ModuleType, type_path: str, buf: bytes, offset: int = 0, **params: Any) -> Any:
    """Our codec's record of type `type_path` ("a::b") of a spec module."""
    cls: Any = module.TYPES[type_path]
    return cls.parse(buf, offset, **params)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def guid(text: str) -> bytes:
    """A GUID in the Microsoft mixed-endian on-disk layout."""
    return uuid.UUID(text).bytes_le


VHDX_BAT = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
VHDX_METADATA = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
VHDX_ITEMS: dict[bytes, str] = {
    guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B"): "file_parameters",
    guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8"): "virtual_disk_size",
    guid("BECA12AB-B2E6-4523-93EF-C309E000C746"): "virtual_disk_id",
    guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"): "logical_sector_size",
    guid("CDA348C7-445D-4471-9CC9-E9885251C556"): "physical_sector_size",
    guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"): "parent_locator",
    guid("DA02D7BC-3D3A-423C-AC88-2A36AB21479B"): "chs_parameters",
}
VHDX_PARENT_LOCATOR_TYPE = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")


def vhdx_image_samples(data: bytes, label: str) -> Iterator[Sample]:
    """Every structure of a VHDX file: header section, regions, metadata items, BAT, log."""
    def at(type_name: str, offset: int, **params: Any) -> Sample:
        return Sample("vhdx", (type_name,), data, offset, params, label)

    yield Sample("vhdx", (), data, label=label)
    yield at("file_identifier", 0)
    headers = [vhdx.Header.parse(data, o) for o in (0x10000, 0x20000)]
    yield at("header", 0x10000)
    yield at("header", 0x20000)
    regions: dict[bytes, vhdx.RegionTableEntry] = {}
    for table_at in (0x30000, 0x40000):
        yield at("region_table", table_at)
        for i, entry in enumerate(vhdx.RegionTable.parse(data, table_at).entries):
            yield at("region_table_entry", table_at + 16 + 32 * i)
            regions[entry.guid] = entry
    meta_at = regions[VHDX_METADATA].file_offset
    table = vhdx.MetadataTable.parse(data, meta_at)
    yield at("metadata_table", meta_at)
    yield at("metadata_table_header", meta_at)
    params: dict[str, Any] = {}
    for i, item in enumerate(table.entries):
        yield at("metadata_table_entry", meta_at + 32 + 32 * i)
        name = VHDX_ITEMS[item.item_id]
        yield at(name, meta_at + item.offset)
        params[name] = parse(vhdx, name, data, meta_at + item.offset)
    block_size = params["file_parameters"].block_size
    chunk_ratio = (1 << 23) * params["logical_sector_size"].logical_sector_size // block_size
    blocks = ceil_div(params["virtual_disk_size"].virtual_disk_size, block_size)
    bat_at = regions[VHDX_BAT].file_offset
    count = blocks + (blocks - 1) // chunk_ratio
    yield at("bat", bat_at, num_entries=count)
    for i in range(count):
        yield at("bat_entry", bat_at + 8 * i)
    # applied log entries stay in the log region (QEMU replays and then zeroes the log GUID)
    current = max(headers, key=lambda h: h.sequence_number)
    log_at, log_end = current.log_offset, current.log_offset + current.log_length
    entry_at = log_at
    while entry_at < log_end and data[entry_at:entry_at + 4] == b"loge":
        log_entry = vhdx.LogEntryHeader.parse(data, entry_at)
        yield at("log_entry_header", entry_at)
        sector_at = entry_at + 4096 * ceil_div(log_entry.descriptor_count + 2, 128)
        for k in range(log_entry.descriptor_count):
            descriptor_at = entry_at + 64 + 32 * k
            if data[descriptor_at:descriptor_at + 4] == b"desc":
                yield at("data_descriptor", descriptor_at)
                yield at("data_sector", sector_at)
                sector_at += 4096
            else:
                yield at("zero_descriptor", descriptor_at)
        entry_at += log_entry.entry_length


def vhdx_parent_locator(entries: list[tuple[str, str]]) -> bytes:
    """A parent locator item: header, key/value entries, then the UTF-16LE strings."""
    out = bytearray(VHDX_PARENT_LOCATOR_TYPE + struct.pack("<HH", 0, len(entries)))
    strings = bytearray()
    base = 20 + 12 * len(entries)
    for key, value in entries:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le", "surrogatepass")
        out += struct.pack("<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v))
        strings += k + v
    return bytes(out + strings)


def vhdx_differencing_metadata() -> bytes:
    """A metadata region (table and items) of a differencing 4K-sector disk, as Hyper-V
    would write it: has_parent set, a parent locator, CHS parameters and a user item."""
    locator = vhdx_parent_locator([
        ("parent_linkage", "{83DE5A3E-7B4E-4C6A-9D0F-1B2C3D4E5F60}"),
        ("relative_path", "..\\base\\parent.vhdx"),
        ("volume_path", "\\\\?\\Volume{1D8C3A2F-0000-0000-0000-100000000000}\\vm\\parent.vhdx"),
        ("absolute_win32_path", "\\\\?\\D:\\vm\\base\\parent.vhdx"),
    ])
    items: list[tuple[str, bytes, int]] = [  # (name, payload, flags)
        ("file_parameters", struct.pack("<II", 2 << 20, 0x2), 0x4),
        ("virtual_disk_size", struct.pack("<Q", 3 << 30), 0x6),
        ("logical_sector_size", struct.pack("<I", 4096), 0x6),
        ("physical_sector_size", struct.pack("<I", 4096), 0x6),
        ("virtual_disk_id", guid("6F1D2E3C-4B5A-4968-8776-A5B4C3D2E1F0"), 0x6),
        ("parent_locator", locator, 0x4),
        ("chs_parameters", struct.pack("<II", 16, 63), 0x2),
    ]
    ids = {name: raw for raw, name in VHDX_ITEMS.items()}
    region = bytearray(b"metadata" + struct.pack("<HH", 0, len(items) + 1) + bytes(20))
    payload = bytearray()
    for name, raw, flags in items:
        region += ids[name] + struct.pack("<IIII", 0x10000 + len(payload), len(raw), flags, 0)
        payload += raw
    # a user item, present but empty (offset 0, length 0)
    region += guid("0B6F5A4D-3C2B-4A19-8807-F6E5D4C3B2A1") + struct.pack("<IIII", 0, 0, 0x1, 0)
    return bytes(region.ljust(0x10000, b"\0") + payload)


def vhdx_log_entry(sequence: int, tail: int, log_guid: bytes) -> bytes:
    """A log entry with a zero descriptor and a data descriptor (QEMU writes only the
    latter), its data sector and a valid CRC-32C."""
    entry = bytearray(2 * 4096)
    struct.pack_into("<4sIIIQII16sQQ", entry, 0, b"loge", 0, len(entry), tail, sequence, 2, 0,
                     log_guid, 5 << 20, 6 << 20)
    struct.pack_into("<4sIQQQ", entry, 64, b"zero", 0, 2 << 20, 4 << 20, sequence)
    struct.pack_into("<4s4s8sQQ", entry, 96, b"desc", b"\xaa\xbb\xcc\xdd", b"leading!", 3 << 20,
                     sequence)
    struct.pack_into("<4sI", entry, 4096, b"data", sequence >> 32)
    entry[4104:8188] = bytes(range(256)) * 15 + bytes(range(244))
    struct.pack_into("<I", entry, 8188, sequence & 0xFFFFFFFF)
    struct.pack_into("<I", entry, 4, vhdx.LogEntryHeader.checksum_of(bytes(entry)))
    return bytes(entry)


def vhdx_hand_built() -> Iterator[Sample]:
    """What Hyper-V / openvmm write and QEMU does not: a header of an open (dirty) file, a
    region table with the required bits set, the BAT of a differencing disk."""
    # openvmm leaves the creator empty
    yield Sample("vhdx", ("file_identifier",), b"vhdxfile".ljust(0x10000, b"\0"), label="no creator")
    header = bytearray(4096)
    struct.pack_into("<4sIQ16s16s16sHHIQ", header, 0, b"head", 0, 1,
                     guid("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"),
                     guid("83DE5A3E-7B4E-4C6A-9D0F-1B2C3D4E5F60"),
                     guid("5C9A8B7D-6E5F-4A3B-9C2D-1E0F2A3B4C5D"), 0, 1, 1 << 20, 1 << 20)
    struct.pack_into("<I", header, 4, vhdx.Header.checksum_of(bytes(header)))
    yield Sample("vhdx", ("header",), bytes(header), label="open file, log guid set")
    table = bytearray(0x10000)
    struct.pack_into("<4sIII", table, 0, b"regi", 0, 2, 0)
    table[16:48] = VHDX_BAT + struct.pack("<QII", 3 << 20, 1 << 20, 1)
    table[48:80] = VHDX_METADATA + struct.pack("<QII", 2 << 20, 1 << 20, 1)
    struct.pack_into("<I", table, 4, vhdx.RegionTable.checksum_of(bytes(table)))
    yield Sample("vhdx", ("region_table",), bytes(table), label="required regions")  # CRC 0xC66B8CAE
    for k in range(2):
        yield Sample("vhdx", ("region_table_entry",), bytes(table), 16 + 32 * k, label="required")
    # the empty entry openvmm writes when it opens a file for writing (vhdx.md 8.6 vector)
    empty = bytearray(4096)
    struct.pack_into("<4sIIIQII16sQQ", empty, 0, b"loge", 0, 4096, 0, 1, 0, 0, bytes(range(1, 17)),
                     4 << 20, 4 << 20)
    struct.pack_into("<I", empty, 4, vhdx.LogEntryHeader.checksum_of(bytes(empty)))  # 0x85F34306
    yield Sample("vhdx", ("log_entry_header",), bytes(empty), label="empty entry")
    # BAT of the 3 GiB differencing disk of vhdx_differencing_metadata(): 2 MiB blocks,
    # 4096-byte sectors, chunk ratio 16384, so one chunk: 16384 payload entries + its bitmap
    entries = [0] * 16385
    entries[:8] = [(4 << 20) | 6, (6 << 20) | 7, 2, (8 << 20) | 1, 3, (10 << 20) | 5, 4, 0]
    entries[1535] = (12 << 20) | 6
    entries[16384] = (14 << 20) | 6  # the chunk's sector bitmap block, present
    bat = struct.pack(f"<{len(entries)}Q", *entries)
    yield Sample("vhdx", ("bat",), bat, params={"num_entries": len(entries)}, label="differencing")
    for k in (*range(8), 1535, 16384):
        yield Sample("vhdx", ("bat_entry",), bat, 8 * k, label=f"differencing entry {k}")


def vhdx_samples(workdir: Path) -> Iterator[Sample]:
    for options, size, writes in (
            ("block_size=1M,log_size=1M", "3M", ("write -P 0x5a 1M 8k", "write -P 0x33 0 4k",
                                                "write -P 0x44 2M 1M")),
            ("subformat=fixed,block_size=1M,block_state_zero=off", "2M", ()),
            ("subformat=fixed,block_size=1M", "2M", ())):
        path = workdir / f"vhdx-{options.replace(',', '_').replace('=', '-')}.vhdx"
        run("qemu-img", "create", "-q", "-f", "vhdx", "-o", options, path, size)
        if writes:
            qemu_io(path, "vhdx", *writes)
        yield from vhdx_image_samples(path.read_bytes(), options)
    region = vhdx_differencing_metadata()
    table = vhdx.MetadataTable.parse(region)
    yield Sample("vhdx", ("metadata_table",), region, label="differencing")
    yield Sample("vhdx", ("metadata_table_header",), region, label="differencing")
    for i, item in enumerate(table.entries):
        yield Sample("vhdx", ("metadata_table_entry",), region, 32 + 32 * i, label="differencing")
        if item.length:
            yield Sample("vhdx", (VHDX_ITEMS[item.item_id],), region, item.offset,
                         label="differencing")
            if VHDX_ITEMS[item.item_id] == "parent_locator":
                locator = region[item.offset:item.offset + item.length]
                yield Sample("vhdx", ("parent_locator",), locator, label="standalone")
                yield Sample("vhdx", ("parent_locator_header",), locator, label="standalone")
                for k in range(4):
                    yield Sample("vhdx", ("parent_locator_entry",), locator, 20 + 12 * k,
                                 label=f"key {k}")
    yield from vhdx_hand_built()
    # NTFS names are any sequence of UTF-16 code units, unpaired surrogates included
    odd = vhdx_parent_locator([("parent_linkage", "{83DE5A3E-7B4E-4C6A-9D0F-1B2C3D4E5F60}"),
                               ("relative_path", "..\\parent-\udc80.vhdx")])
    yield Sample("vhdx", ("parent_locator",), odd, label="unpaired surrogate in a path")
    yield Sample("vhdx", ("parent_locator_entry",), odd, 32, label="unpaired surrogate in a path")
    log = vhdx_log_entry(0x1_0000_0007, 0x3000, guid("5C9A8B7D-6E5F-4A3B-9C2D-1E0F2A3B4C5D"))
    yield Sample("vhdx", ("log_entry_header",), log, label="zero and data descriptors")
    yield Sample("vhdx", ("zero_descriptor",), log, 64, label="hand-built")
    yield Sample("vhdx", ("data_descriptor",), log, 96, label="hand-built")
    yield Sample("vhdx", ("data_sector",), log, 4096, label="sequence above 2**32")


def qcow2_image_samples(data: bytes, label: str) -> Iterator[Sample]:
    """Every structure reachable from a qcow2 header: extensions, L1/L2 and refcount tables
    and their entries, snapshots, bitmaps."""
    def at(type_name: str, offset: int, **params: Any) -> Sample:
        return Sample("qcow2", (type_name,), data, offset, params, label)

    header = qcow2.Header.parse(data)
    cluster_bits, cluster_size = header.cluster_bits, header.cluster_size
    yield Sample("qcow2", (), data, label=label)
    yield at("header", 0)
    pos = header.header_length_effective
    end = header.backing_file_offset or cluster_size
    while pos < end:
        ext = qcow2.HeaderExtension.parse(data, pos)
        yield at("header_extension", pos)
        if ext.ext_type == qcow2.HeaderExtensionType.FEATURE_NAME_TABLE:
            yield at("feature_name_table", pos + 8, num_entries=ext.len_data // 48)
            for k in range(ext.len_data // 48):
                yield at("feature_name_entry", pos + 8 + 48 * k)
        elif ext.ext_type == qcow2.HeaderExtensionType.BITMAPS:
            yield at("bitmaps_extension", pos + 8)
            yield from qcow2_bitmap_samples(data, qcow2.BitmapsExtension.parse(data, pos + 8), label)
        elif ext.ext_type == qcow2.HeaderExtensionType.FULL_DISK_ENCRYPTION:
            yield at("full_disk_encryption_header_pointer", pos + 8)
        elif ext.ext_type == qcow2.HeaderExtensionType.END:
            break
        pos += ext.total_size
    l1_tables = [(header.l1_table_offset, header.l1_size)]
    if header.nb_snapshots:
        yield at("snapshot_table", header.snapshots_offset, num_entries=header.nb_snapshots)
        pos = header.snapshots_offset
        for _ in range(header.nb_snapshots):
            snapshot = qcow2.SnapshotEntry.parse(data, pos)
            yield at("snapshot_entry", pos)
            yield at("snapshot_extra_data", pos + 40, len_extra_data=snapshot.extra_data_size)
            l1_tables.append((snapshot.l1_table_offset, snapshot.l1_size))
            pos += snapshot.total_size
    extended = header.has_extended_l2
    for l1_at, l1_size in l1_tables:
        yield at("table", l1_at, num_entries=l1_size)
        for i in range(l1_size):
            yield at("l1_entry", l1_at + 8 * i)
            l2_at = qcow2.L1Entry.parse(data, l1_at + 8 * i).l2_table_offset
            if not l2_at:
                continue
            yield at("table", l2_at, num_entries=header.l2_entries * (2 if extended else 1))
            used = [j for j in range(header.l2_entries)
                    if any(data[l2_at + header.l2_entry_size * j:
                                l2_at + header.l2_entry_size * (j + 1)])]
            for j in sorted({*used[:12], *used[-4:]}):  # enough of a long run of entries
                entry_at = l2_at + header.l2_entry_size * j
                raw = data[entry_at:entry_at + header.l2_entry_size]
                if extended:
                    yield at("l2_entry_extended", entry_at)
                elif raw[0] & 0x40:
                    yield at("compressed_cluster_descriptor", entry_at, cluster_bits=cluster_bits)
                else:
                    yield at("l2_entry", entry_at)
    yield at("table", header.refcount_table_offset, num_entries=header.refcount_table_entries)
    for i in range(header.refcount_table_entries):
        entry_at = header.refcount_table_offset + 8 * i
        block_at = qcow2.RefcountTableEntry.parse(data, entry_at).refcount_block_offset
        if block_at or i == 1:  # the allocated blocks and one empty slot
            yield at("refcount_table_entry", entry_at)
        if block_at:
            yield at("refcount_block", block_at, refcount_order=header.refcount_order_effective,
                     cluster_size=cluster_size)


def qcow2_bitmap_samples(data: bytes, ext: qcow2.BitmapsExtension, label: str
                         ) -> Iterator[Sample]:
    def at(type_name: str, offset: int, **params: Any) -> Sample:
        return Sample("qcow2", (type_name,), data, offset, params, label)

    yield at("bitmap_directory", ext.bitmap_directory_offset, num_entries=ext.nb_bitmaps)
    pos = ext.bitmap_directory_offset
    for _ in range(ext.nb_bitmaps):
        entry = qcow2.BitmapDirectoryEntry.parse(data, pos)
        yield at("bitmap_directory_entry", pos)
        yield at("table", entry.bitmap_table_offset, num_entries=entry.bitmap_table_size)
        for k in range(entry.bitmap_table_size):
            yield at("bitmap_table_entry", entry.bitmap_table_offset + 8 * k)
        pos += entry.total_size


def qcow2_text(size: int) -> bytes:
    """Deterministic, half-compressible guest data (numbered text lines)."""
    out = bytearray()
    k = 0
    while len(out) < size:
        out += f"{k:08d} {k * 2654435761 % 4294967296:08x} the quick brown fox {k % 97:02d}\n".encode()
        k += 1
    return bytes(out[:size])


def qcow2_patched_headers(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Cluster 0 of a QEMU v3 image, edited the way other writers lay it out: a LUKS-style
    full disk encryption pointer, a 104-byte header (no compression type byte) and a
    128-byte header with additional fields unknown to this spec."""
    base = bytearray(data[:4096])
    luks = bytearray(base)
    struct.pack_into(">I", luks, 32, 2)  # crypt_method luks
    luks[112:144] = struct.pack(">IIQQ", 0x0537BE77, 16, 0x4000, 0x1F9000) + bytes(8)
    yield "luks pointer", bytes(luks)
    short = bytearray(base)
    struct.pack_into(">I", short, 100, 104)
    short[104:120] = bytes(16)
    yield "header_length 104", bytes(short)
    long = bytearray(base)
    struct.pack_into(">I", long, 100, 128)
    long[105:128] = bytes(7) + b"\x00\x00\x00\x2a" + bytes(4) + b"future fields"[:8]
    long[128:136] = bytes(8)
    yield "header_length 128", bytes(long)


def qcow2_hand_built() -> Iterator[Sample]:
    """Entries QEMU does not write: other snapshot extra data sizes, an all-ones bitmap
    table entry, an unknown header extension, a zero-flagged L2 entry with an offset."""
    def snapshot(extra: bytes, vm_state_size: int, id_str: str, name: str) -> bytes:
        raw = struct.pack(">QIHHIIQII", 0x50000, 1, len(id_str), len(name), 1700000000, 123456789,
                          987654321000, vm_state_size, len(extra)) + extra + (id_str + name).encode()
        return raw + bytes(-len(raw) % 8)

    for extra, vm_state_size in ((b"", 0x2000),  # a very old writer: no extra data
                                 (struct.pack(">QQ", 0, 4 << 20), 0),  # the v3 minimum
                                 (struct.pack(">QQq", 5 << 30, 4 << 20, -1) + b"future extra data",
                                  0)):
        raw = snapshot(extra, vm_state_size, "7", "extra " + str(len(extra)))
        yield Sample("qcow2", ("snapshot_entry",), raw, label=f"extra data {len(extra)}")
        yield Sample("qcow2", ("snapshot_extra_data",), raw, 40, {"len_extra_data": len(extra)},
                     label=f"extra data {len(extra)}")
    yield Sample("qcow2", ("bitmap_table_entry",), struct.pack(">Q", 1), label="all ones")
    # a bitmap left in use by a crashed writer, with extra data it may ignore
    name = b"backup-incremental"
    entry = struct.pack(">QIIBBHI", 0x90000, 4, 0x7, 1, 20, len(name), 8) + b"\x01\x02\x03\x04extr"
    entry += name + bytes(-(len(entry) + len(name)) % 8)
    yield Sample("qcow2", ("bitmap_directory_entry",), entry, label="in use, extra data")
    yield Sample("qcow2", ("bitmap_directory",), entry + entry, params={"num_entries": 2},
                 label="in use, extra data")
    yield Sample("qcow2", ("l2_entry",), struct.pack(">Q", 0x8000000000050001), label="zero alloc")
    unknown = struct.pack(">II", 0x12345678, 13) + b"vendor data!!" + b"\0" * 3
    yield Sample("qcow2", ("header_extension",), unknown, label="unknown type, padded")


def qcow2_samples(workdir: Path) -> Iterator[Sample]:
    def image(name: str, options: str, size: str = "4M", *writes: str,
              create: tuple[str, ...] = ()) -> Path:
        path = workdir / f"{name}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", *create, "-o", options, path, size,
            cwd=workdir)
        if writes:
            qemu_io(path, "qcow2", *writes)
        return path

    # v2 (compat 0.10) with 4 KiB clusters and an internal snapshot
    base = image("base", "compat=0.10,cluster_size=4096", "4M",
                 "write -P 0x11 0 64k", "write -P 0x22 1M 4k")
    run("qemu-img", "snapshot", "-c", "snap-one", base)
    qemu_io(base, "qcow2", "write -P 0x33 8k 4k")
    # v3 child: backing file and format, lazy refcounts, two persistent bitmaps, zero clusters
    top = image("top", "backing_file=base.qcow2,backing_fmt=qcow2,lazy_refcounts=on")
    run("qemu-img", "bitmap", "--add", top, "dirty0")
    run("qemu-img", "bitmap", "--add", "-g", "4096", top, "dirty-4k")
    qemu_io(top, "qcow2", "write -P 0x44 0 4k", "write -z 1M 64k", "write -P 0x45 3M 128k")
    run("qemu-img", "snapshot", "-c", "second snapshot", top)
    # compressed clusters, deflate and zstd, from half-compressible data
    raw = workdir / "text.raw"
    raw.write_bytes(qcow2_text(256 << 10))
    compressed = []
    for name, options in (("deflate", "cluster_size=4096"),
                          ("zstd", "compression_type=zstd,cluster_size=65536")):
        path = workdir / f"compressed-{name}.qcow2"
        run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", options, raw, path)
        compressed.append(path)
    extended = image("extended", "extended_l2=on,cluster_size=32k", "4M",
                     "write -P 0x55 4k 2k", "write -P 0x56 64k 32k", "write -z 128k 4k")
    external = image("external", "data_file=external.raw,data_file_raw=on,cluster_size=4096",
                     "1M", "write -P 0x66 0 8k")
    aes = image("aes", "encrypt.format=aes,encrypt.key-secret=sec0", "1M",
                create=("--object", "secret,id=sec0,data=passw0rd"))
    refcounts = [image(f"refcount-{bits}", f"refcount_bits={bits},cluster_size=4096", "1M",
                       "write -P 0x77 0 12k") for bits in (1, 2, 4, 8, 32, 64)]
    for path in (base, top, *compressed, extended, external, aes, *refcounts):
        yield from qcow2_image_samples(path.read_bytes(), path.stem)
    for label, cluster0 in qcow2_patched_headers(refcounts[3].read_bytes()):
        yield Sample("qcow2", ("header",), cluster0, label=label)
        header = qcow2.Header.parse(cluster0)
        yield Sample("qcow2", ("header_extension",), cluster0, header.header_length_effective,
                     label=label)
        if label == "luks pointer":
            yield Sample("qcow2", ("full_disk_encryption_header_pointer",), cluster0, 120,
                         label=label)
    yield from qcow2_hand_built()


def qed_samples(workdir: Path) -> Iterator[Sample]:
    run("qemu-img", "create", "-q", "-f", "raw", workdir / "qed-base.raw", "4M")
    run("qemu-img", "create", "-q", "-f", "qcow2", workdir / "qed-base.qcow2", "4M")
    images = []
    for name, options, writes in (
            # table_size 1 is legal but QEMU 7.2 cannot open such an image; 2 is the smallest
            ("raw-backing", "backing_file=qed-base.raw,backing_fmt=raw,cluster_size=4096,table_size=2",
             ("write -P 0x11 0 8k", "write -z 64k 4k", "write -P 0x12 2M 4k")),
            ("qcow2-backing", "backing_file=qed-base.qcow2,backing_fmt=qcow2",
             ("write -P 0x21 0 8k", "write -z 128k 64k")),
            ("no-backing", "cluster_size=16384,table_size=8", ("write -P 0x31 1M 20k",))):
        path = workdir / f"{name}.qed"
        run("qemu-img", "create", "-q", "-f", "qed", "-o", options, path, "4M", cwd=workdir)
        qemu_io(path, "qed", *writes)
        images.append((name, path.read_bytes()))
    # what a writer that crashed leaves behind: need check set, an unknown autoclear bit
    crashed = bytearray(images[1][1])
    struct.pack_into("<QQQ", crashed, 16, 0x3, 0, 0x80)
    images.append(("need check", bytes(crashed)))
    for label, data in images:
        header = qed.Header.parse(data)
        yield Sample("qed", (), data, label=label)
        yield Sample("qed", ("header",), data, label=label)
        yield Sample("qed", ("table",), data, header.l1_table_offset,
                     {"num_entries": header.table_nelems}, label=f"{label} L1")
        l1 = qed.Table.parse(data, header.l1_table_offset, num_entries=header.table_nelems)
        for l2_at in filter(None, l1.entries):
            yield Sample("qed", ("table",), data, l2_at, {"num_entries": header.table_nelems},
                         label=f"{label} L2")


# FVD founding header (fvd-seed-layout.md), packed little-endian, 7440 bytes
FVD_HEADER = struct.Struct(
    "<4sIIIQQ1024s16s1024s16s"  # magic .. base_img_fmt
    "QQQQQQ"  # base_img_size, bitmap_offset, bitmap_size, block_size, journal_offset, journal_size
    "I"  # clean_shutdown
    "QQQQQQQ"  # stable_journal_epoch .. storage_grow_unit
    "1024sIIQqIIQ"  # add_storage_cmd .. bytes_per_prefetch
    "QQQQQQQ"  # prefetch_*_throughput_measure_time, min/max read/write throughput, throttle
    "I4096s")  # need_zero_init, incompatible_features
# FVD IBM-driver header (fvd.md 2.1, variant A), packed little-endian, 4336 bytes
FVD_IBM_HEADER = struct.Struct(
    "<4sIiqq1024s16sqqqiiq1024s16s"  # magic .. data_file_fmt
    "iqqii"  # prefetch_start_delay, profile offset/entries, num_prefetch_slots, bytes_per_prefetch
    "iiiiiiiii"  # measure times, alpha, min/max throughputs, throttle time, compact_image
    "qqq2048sqqiiiii16s")  # table_offset .. write_updates_base_img
FVD_BITMAP_RECORD, FVD_TABLE_RECORD = 0x3F2AB8ED, 0xB4E6F7AC
FVD_EMPTY = 0xFFFFFFFF


def fvd_founding_image(header_values: dict[str, Any] | None = None) -> bytes:
    """A compact FVD image in the founding layout with a base image: header, bitmap,
    journal (variant B records, as the spec assumes), lookup table; data follows."""
    mib = 1 << 20
    values: dict[str, Any] = dict(
        header_size=8192, create_version=1, last_open_version=2, virtual_disk_size=10 * mib,
        data_offset=20480, data_file=b"", data_file_fmt=b"", base_img=b"fedora-base.raw",
        base_img_fmt=b"raw", base_img_size=8 * mib, bitmap_offset=8192, bitmap_size=4096,
        block_size=65536, journal_offset=12288, journal_size=4096, clean_shutdown=0,
        stable_journal_epoch=3, journal_buf_size=65536, journal_clean_buf_period=5000,
        table_offset=16384, table_size=4096, chunk_size=mib, storage_grow_unit=100 * mib,
        add_storage_cmd=b"/usr/local/bin/grow-lv vg0/fvd-data", chunks_relocated=1,
        copy_on_read=1, max_outstanding_copy_on_read_data=2000000, prefetch_start_delay=30,
        base_img_fully_prefetched=0, num_prefetch_slots=2, bytes_per_prefetch=mib,
        prefetch_read_throughput_measure_time=100, prefetch_write_throughput_measure_time=100,
        prefetch_min_read_throughput=5120, prefetch_min_write_throughput=5120,
        prefetch_max_read_throughput=1000000000, prefetch_max_write_throughput=1000000000,
        prefetch_throttle_time=30000, need_zero_init=0,
        incompatible_features=bytes(4096))
    values.update(header_values or {})
    header = FVD_HEADER.pack(b"FVD\0", *values.values())
    assert len(header) == 7440
    image = bytearray(20480)
    image[:7440] = header
    image[8192:8192 + 16] = bytes([0x07, 0x80, 0, 0x01, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40])
    journal = [
        # a bitmap record, the terminator, then stale bytes from an earlier use of the sector
        struct.pack("<IIQI", FVD_BITMAP_RECORD, 128, 2048, 0) + b"\xa5" * 492,
        # a mixed sector: table record (epoch 3, 2 entries from chunk 9) + bitmap record
        struct.pack("<IQII2I", FVD_TABLE_RECORD, 3, 2, 8, 0x80000004, 5)
        + struct.pack("<IIQI", FVD_BITMAP_RECORD, 4096, 16384, 0),
        # a full table-only sector: 123 entries, no terminator
        struct.pack("<IQII", FVD_TABLE_RECORD, 3, 123, 0) + struct.pack("<123I", *range(123)),
        # an unknown record type (a torn or foreign write)
        struct.pack("<I", 0x12345678) + bytes(range(252)) * 2 + b"\x5a" * 4,
    ]
    journal = [sector.ljust(512, b"\0") for sector in journal]
    assert all(len(sector) == 512 for sector in journal)
    image[12288:12288 + 2048] = b"".join(journal)  # sectors 4..7 stay zero
    image[16384:20480] = b"\xff" * 4096
    struct.pack_into("<10I", image, 16384, 0, 1, FVD_EMPTY, 2, 3, FVD_EMPTY, FVD_EMPTY, 6, 4, 5)
    return bytes(image) + bytes(range(256)) * 16  # the first 4 KiB of chunk 0


def fvd_ibm_image() -> bytes:
    """A compact FVD image of the IBM driver (variant A) with a base image, a separate
    data file, prefetch on, not closed cleanly, and a journal of bitmap, table and mixed
    sectors (fvd.md 5.1)."""
    mib = 1 << 20
    header = FVD_IBM_HEADER.pack(
        bytes([0xA9, 0xF5, 0x43, 0x51]), 1, 0, 10 * mib, 20480, b"base-image.qcow2", b"qcow2",
        8 * mib, 8192, 4096, 7680, 1, 2000000, b"fvd-data.raw", b"raw",
        30, 0, 0, 2, 1052160, 100, 100, 80, 5120, 5120, 1000000000, 1000000000, 30000, 1,
        12288, mib, 100 * mib, b"builtin:lvextend", 16384, 4096, 0, 0, 0, 4096, -1, b"")
    assert len(header) == 4336
    image = bytearray(20480)
    image[:4336] = header
    image[8192:8192 + 8] = bytes([0xFF, 0x03, 0, 0x10, 0, 0, 0x80, 0x01])
    image[12288:16384] = b"\xff" * 4096
    struct.pack_into("<10I", image, 12288, 0, FVD_EMPTY, 1, 2, FVD_EMPTY, 3, 4, 5, 6, 7)
    journal = [
        struct.pack("<IIqI", FVD_BITMAP_RECORD, 15, 1000, 0) + b"\x3c" * 492,
        struct.pack("<III3I", FVD_TABLE_RECORD, 2, 3, 1, 2, 0x80000008)
        + struct.pack("<IIqI", FVD_BITMAP_RECORD, 4096, 4096, 0),
        struct.pack("<III", FVD_TABLE_RECORD, 0, 125) + struct.pack("<125I", *range(125)),
    ]
    journal = [sector.ljust(512, b"\0") for sector in journal]
    image[16384:16384 + 1536] = b"".join(journal)
    return bytes(image)


def struct_fields(layout: struct.Struct) -> list[tuple[str, int]]:
    """The fields of a struct format as (code, size): "<I16sQ" -> [("I", 4), ("s", 16), ("Q", 8)]."""
    out: list[tuple[str, int]] = []
    for count, code in re.findall(r"(\d*)([a-zA-Z])", layout.format):
        if code == "s":
            out.append((code, int(count or 1)))
        else:
            out += [(code, struct.calcsize("<" + code))] * int(count or 1)
    return out


def distinct_values(layout: struct.Struct, magic: bytes) -> bytes:
    """`layout` packed with a distinct non-zero value in every field after the magic (so a
    field read at the wrong offset cannot go unnoticed); strings get stale bytes after
    their NUL, as a writer that strcpy()s a shorter name over a longer one leaves them."""
    values: list[Any] = [magic]
    for k, (code, size) in enumerate(struct_fields(layout)[1:], start=1):
        if code == "s":
            text = f"field-{k}".encode()
            values.append(text + b"\0" + b"old-name.img"[:size - len(text) - 1] if size <= 2048
                          else bytes([k]) + bytes(size - 2) + b"\x80")
        elif code in "iq":
            values.append(-k * 1000003)
        else:
            values.append(k * 0x01000193 + (k << 33 if code == "Q" else 0))
    return layout.pack(*values)


def fvd_samples(workdir: Path) -> Iterator[Sample]:
    del workdir  # no reference tool: everything is built from the sheets' tables
    founding = fvd_founding_image()
    ibm = fvd_ibm_image()
    for label, image, header_type, journal_type in (("founding", founding, "header", "journal"),
                                                     ("ibm", ibm, "ibm_header", "ibm_journal")):
        header = parse(fvd, header_type, image)
        sector_type = journal_type + "_sector"
        list_type = journal_type.replace("journal", "journal_record_list")
        record_type = journal_type.replace("journal", "journal_record")
        yield Sample("fvd", (), image, label=label)
        yield Sample("fvd", (header_type,), image, label=label)
        yield Sample("fvd", ("bitmap",), image, header.bitmap_offset,
                     {"num_bytes": header.bitmap_size}, label=label)
        yield Sample("fvd", ("table",), image, header.table_offset,
                     {"num_entries": header.num_table_entries}, label=label)
        sectors = header.journal_size // 512
        yield Sample("fvd", (journal_type,), image, header.journal_offset,
                     {"num_sectors": sectors}, label=label)
        for k in range(sectors):
            at = header.journal_offset + 512 * k
            sector = image[at:at + 512]
            yield Sample("fvd", (sector_type,), image, at, label=f"{label} sector {k}")
            # a record list and its records read to the end of their stream: the sector alone
            yield Sample("fvd", (list_type,), sector, label=f"{label} sector {k}")
            records = parse(fvd, list_type, sector).records
            pos = 0
            for record in records:
                yield Sample("fvd", (record_type,), sector, pos, label=f"{label} sector {k}")
                pos += len(record.build())
    # a never-used journal sector: a single `empty` record and 508 zero bytes
    yield Sample("fvd", ("journal_record_list",), bytes(512), label="zeroed sector")
    for label, header_type, layout, magic in (
            ("founding", "header", FVD_HEADER, b"FVD\0"),
            ("ibm", "ibm_header", FVD_IBM_HEADER, bytes([0xA9, 0xF5, 0x43, 0x51]))):
        yield Sample("fvd", (header_type,), distinct_values(layout, magic),
                     label=f"{label}, every field distinct")
    # a founding image that is not compact and keeps its data in a separate file
    plain = fvd_founding_image({"data_offset": 0, "data_file": b"/srv/fvd/vm1-data.img",
                                "data_file_fmt": b"raw", "table_offset": 0, "table_size": 0,
                                "clean_shutdown": 1, "need_zero_init": 1,
                                "base_img_fully_prefetched": 1, "chunks_relocated": 0})
    yield Sample("fvd", (), plain, label="separate data file")
    yield Sample("fvd", ("header",), plain, label="separate data file")
    # the never-written prefetch profile entry of the IBM layout
    profile = struct.pack("<qI", 64 << 20, 256) + struct.pack("<qI", 1 << 40, 0xFFFFFFFF)
    yield Sample("fvd", ("ibm_prefetch_profile_entry",), profile, label="64 MiB")
    yield Sample("fvd", ("ibm_prefetch_profile_entry",), profile, 12, label="1 TiB")


def add_cow_v7_file(backing: str, image: str, sectors: int, written: list[int]) -> bytes:
    """A founding-layout (v7) add-cow file: 2560-byte big-endian header, sector bitmap."""
    header = struct.pack(">8sI1024s1024s500s", b"ADD_COW\xff", 1, backing.encode(), image.encode(),
                         bytes(500))
    bitmap = bytearray(ceil_div(sectors, 8))
    for sector in written:
        bitmap[sector // 8] |= 1 << (sector % 8)
    return header + bytes(bitmap)


def add_cow_v20_file(backing: str, backing_fmt: str, image: str, cluster_bits: int,
                     virtual_size: int, written: list[int]) -> bytes:
    """A final-layout (V20) add-cow file as the V20 driver creates it: 76-byte header, the
    names right after it, header_size = max(4096, cluster size), cluster bitmap padded to
    a whole cluster."""
    cluster = 1 << cluster_bits
    header_size = max(4096, cluster)
    names = backing.encode() + image.encode()
    header = struct.pack("<4sIIIIIQQI16s16s", b"ACOW", 76 if backing else 0, len(backing),
                         76 + len(backing), len(image), cluster_bits, 0, 0 if backing else 1,
                         header_size, backing_fmt.encode(), b"raw")
    clusters = ceil_div(virtual_size, cluster)
    bitmap = bytearray(ceil_div(ceil_div(clusters, 8), cluster) * cluster)
    for c in written:
        bitmap[c // 8] |= 1 << (c % 8)
    return (header + names).ljust(header_size, b"\0") + bytes(bitmap)


def add_cow_samples(workdir: Path) -> Iterator[Sample]:
    del workdir  # no reference tool: everything is built from the sheets' tables
    files = [
        ("v7", add_cow_v7_file("ubuntu.img", "test.raw", 2048, [0, 2, 3, 9, 1000, 2047])),
        ("v7 absolute names",
         add_cow_v7_file("nbd:localhost:10809", "/var/lib/images/snapshot-1.raw", 20, [19])),
        ("v20", add_cow_v20_file("base.qcow2", "qcow2", "disk.raw", 16, 8 << 20, [0, 1, 7, 127])),
        ("v20 no backing file", add_cow_v20_file("", "", "/srv/vm/disk0.img", 12, 1 << 20, [])),
    ]
    for label, data in files:
        kind = "header_v7" if data[:4] == b"ADD_" else "header_v20"
        header = parse(add_cow, kind, data)
        bitmap_at = 2560 if kind == "header_v7" else header.header_size
        yield Sample("add_cow", (), data, label=label)
        yield Sample("add_cow", (kind,), data, label=label)
        yield Sample("add_cow", ("bitmap",), data, bitmap_at,
                     {"num_bytes": len(data) - bitmap_at}, label=label)
    # every field distinct and non-zero (unknown feature bits: a file from a newer writer)
    yield Sample("add_cow", ("header_v7",),
                 distinct_values(struct.Struct(">8sI1024s1024s500s"), b"ADD_COW\xff"),
                 label="every field distinct")
    yield Sample("add_cow", ("header_v20",),
                 distinct_values(struct.Struct("<4sIIIIIQQI16s16s"), b"ACOW"),
                 label="every field distinct")


SampleMaker = Callable[[Path], Iterator[Sample]]

MAKERS: dict[str, SampleMaker] = {
    "vhd": vhd_samples,
    "vhdx": vhdx_samples,
    "qcow2": qcow2_samples,
    "qed": qed_samples,
    "fvd": fvd_samples,
    "add_cow": add_cow_samples,
}


def all_samples(workdir: Path) -> list[Sample]:
    out: list[Sample] = []
    for maker in MAKERS.values():
        out += list(maker(workdir))
    return out
