"""Dissecting VHD images (fixed, dynamic, differencing): footers, dynamic header, parent
locators and their data, the BAT and the runs of data blocks it points at."""

from __future__ import annotations

import datetime
from array import array
from typing import Any, Literal

from diskspec.formats import vhd

from ..engines.vhd import geometry, locators
from ..util import ceil_div, round_up
from .common import (
    Reader,
    add_checks,
    checksum_verdict,
    decode,
    human_size,
    run_nodes,
    signature_verdict,
    structure_node,
)
from .model import Field, Node, Table
from .options import Options

BYTEORDER: Literal["big"] = "big"
SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
FOOTER = vhd.Footer.SIZE
HEADER = vhd.DynamicHeader.SIZE
COOKIE = vhd.Footer.FIELDS[0].contents or b"conectix"
HEADER_COOKIE = vhd.DynamicHeader.FIELDS[0].contents or b"cxsparse"
VHD_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
#: BAT entries past what the disk needs that are still read as part of the table (old QEMU
#: rounded the count up); a count beyond this is not believed
EXTRA_ENTRIES = 4096
#: damage lines listed per kind of problem (the rest are counted)
MAX_LISTED = 10


def probe(head: bytes, tail: bytes) -> bool:
    return head[:8] == COOKIE or tail[-FOOTER:][:8] == COOKIE or tail[-511:][:8] == COOKIE


def vhd_time(stamp: int) -> str:
    return (VHD_EPOCH + datetime.timedelta(seconds=stamp)).strftime("%Y-%m-%d %H:%M:%S UTC")


def _footer_node(name: str, raw: bytes, at: int, size: int) -> tuple[Node, vhd.Footer | None, bool]:
    record, problems = decode(vhd.Footer, raw, 0, byteorder=BYTEORDER)
    node = structure_node(name, "footer", record, at, size, vhd, problems)
    ok = False
    if record is not None:
        sig = signature_verdict(node)
        crc = checksum_verdict(vhd.Footer, record, raw, 0, at)
        add_checks(node, sig, crc)
        ok = crc.ok and (sig is None or sig.ok)
        _enrich_footer(node, record)
    return node, record, ok


def _enrich_footer(node: Node, f: vhd.Footer) -> None:
    for fld in node.fields:
        if fld.name == "timestamp":
            fld.meaning = vhd_time(f.timestamp)
        elif fld.name == "features":
            names = [n for bit, n in ((1, "temporary"), (2, "reserved (always set)"))
                     if f.features & bit]
            fld.meaning = ", ".join(names) or "none (bit 1 should be set)"
        elif fld.name in ("format_version", "creator_version"):
            value = int(fld.value or 0)
            fld.meaning = f"{value >> 16}.{value & 0xFFFF}"
        elif fld.name in ("original_size", "current_size"):
            fld.meaning = human_size(int(fld.value or 0))
        elif fld.name == "data_offset":
            fld.meaning = "none (fixed disk)" if f.is_fixed_data_offset else "dynamic disk header"
        elif fld.name == "unique_id":
            fld.meaning = _uuid(f.unique_id)
        elif fld.name == "saved_state":
            fld.meaning = "saved state" if f.saved_state else "not in saved state"
    g = f.disk_geometry
    node.fields.append(Field("chs_bytes", node.offset + 56, 0,
                             g.cylinders * g.heads * g.sectors_per_track * SECTOR,
                             "cylinders x heads x sectors x 512", "derived from disk_geometry"))


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def dissect(reader: Reader, root: Node, options: Options) -> None:
    size = reader.size
    tail_at, tail_len = max(0, size - FOOTER), FOOTER
    tail = reader.read(tail_at, FOOTER)
    if tail[:8] != COOKIE and size >= 511 and reader.read(size - 511, 8) == COOKIE:
        tail_at, tail_len = size - 511, 511
        tail = reader.read(tail_at, 511) + b"\0"
    head = reader.read(0, FOOTER)
    end_node = end_footer = None
    end_ok = False
    if tail[:8] == COOKIE and len(tail) == FOOTER:
        end_node, end_footer, end_ok = _footer_node("footer", tail, tail_at, tail_len)
        if tail_len == 511:
            end_node.notes.append("511-byte footer (Virtual PC before 2004)")
    else:
        root.damage.append("no footer (cookie 'conectix') in the last 512 bytes: "
                           "the file is truncated or the footer overwritten")
    copy_node = copy_footer = None
    copy_ok = False
    if head[:8] == COOKIE and len(head) == FOOTER and (end_node is None or tail_at > 0):
        copy_node, copy_footer, copy_ok = _footer_node("footer_copy", head, 0, FOOTER)
    # the footer to trust: a valid one at the end, else a valid copy, else whatever decodes
    trusted, why = None, ""
    for cand, ok, label in ((end_footer, end_ok, "the footer at the end"),
                            (copy_footer, copy_ok, "the copy at offset 0"),
                            (end_footer, False, "the footer at the end (damaged)"),
                            (copy_footer, False, "the copy at offset 0 (damaged)")):
        if cand is not None and (ok or label.endswith("(damaged)")):
            trusted, why = cand, label
            break
    if trusted is None:
        root.damage.append("no decodable VHD footer: nothing else can be located")
        for n in (end_node, copy_node):
            if n is not None:
                root.add(n)
        return
    root.notes.append(f"layout taken from {why}")
    disk_type = trusted.disk_type
    fixed = disk_type == vhd.DiskType.FIXED
    if copy_node is not None and fixed and trusted is end_footer:
        copy_node = None  # offset 0 of a fixed disk is guest data that happens to say conectix
        root.notes.append("guest data at offset 0 starts with a VHD cookie (a nested image?)")
    for n in (end_node, copy_node):
        if n is not None:
            root.add(n)
    if end_node is not None and copy_node is not None and head != tail[:FOOTER]:
        root.damage.append("the footer copy at offset 0 differs from the footer at the end")
    if copy_node is not None and end_node is not None:
        (copy_node if trusted is end_footer else end_node).notes.append("not the footer in use")
    subformat = {int(vhd.DiskType.FIXED): "fixed", int(vhd.DiskType.DYNAMIC): "dynamic",
                 int(vhd.DiskType.DIFFERENCING): "differencing"}.get(int(disk_type))
    root.fields.append(Field("subformat", 0, 0, subformat,
                             None if subformat else f"unknown disk type {int(disk_type)}", ""))
    vsize = geometry.virtual_size(trusted)
    root.fields.append(Field("virtual_size", 0, 0, vsize, human_size(vsize),
                             "geometry for Virtual PC / QEMU creators, else current_size"))
    if subformat is None:
        root.damage.append(f"unknown disk type {int(disk_type)}: only the footers are shown")
        return
    footer_at = tail_at if end_node is not None else size
    if fixed:
        _fixed(root, trusted, footer_at, vsize)
    else:
        _dynamic(root, reader, trusted, footer_at, options,
                 differencing=disk_type == vhd.DiskType.DIFFERENCING)


def _fixed(root: Node, footer: vhd.Footer, footer_at: int, vsize: int) -> None:
    want = footer.current_size
    have = min(want, footer_at)
    data = root.add(Node("data", 0, have, "data",
                         f"guest data, virtual bytes 0 to {have:#x} at the same file offsets"))
    if want > footer_at:
        data.damage.append(f"the footer claims {want} bytes of data but the file holds "
                           f"{footer_at} before its footer: truncated by {want - footer_at} bytes")
    elif vsize > footer_at:
        g = footer.disk_geometry
        data.damage.append(f"the geometry {g.cylinders}/{g.heads}/{g.sectors_per_track} claims "
                           f"{vsize} bytes but the file holds {footer_at} before its footer: the "
                           "disk would read the footer as guest data (the engine cuts the disk "
                           "to the data)")


def _dynamic(root: Node, reader: Reader, footer: vhd.Footer, footer_at: int, options: Options,
             differencing: bool) -> None:
    size = reader.size
    off = footer.data_offset
    if off % SECTOR or off + HEADER > size:
        root.damage.append(f"footer.data_offset {off:#x} does not point at a dynamic disk header "
                           f"inside the file ({size} bytes)")
        return
    raw = reader.read(off, HEADER)
    header, problems = decode(vhd.DynamicHeader, raw, 0, byteorder=BYTEORDER)
    node = root.add(structure_node("dynamic_header", "dynamic_header", header, off, HEADER, vhd,
                                   problems))
    if header is None:
        return
    add_checks(node, signature_verdict(node),
               checksum_verdict(vhd.DynamicHeader, header, raw, 0, off))
    for fld in node.fields:
        if fld.name == "parent_timestamp" and header.parent_timestamp:
            fld.meaning = vhd_time(header.parent_timestamp)
        elif fld.name == "parent_unique_id" and any(header.parent_unique_id):
            fld.meaning = _uuid(header.parent_unique_id)
        elif fld.name == "parent_unicode_name" and fld.value:
            fld.meaning = "parent file name"
        elif fld.name == "block_size":
            fld.meaning = human_size(header.block_size)
        elif fld.name == "data_offset":
            fld.meaning = "unused (all ones)" if header.data_offset in (
                0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF) else "should be all ones"
    _locators(root, node, reader, header, differencing)
    bs = header.block_size
    if bs < SECTOR or bs & (bs - 1):
        node.damage.append(f"block size {bs} is not a power of two of at least 512: "
                           "the blocks cannot be located")
        bs = 0
    _bat(root, reader, header, footer, bs, footer_at, options)


def _locators(root: Node, hnode: Node, reader: Reader, header: vhd.DynamicHeader,
              differencing: bool) -> None:
    for i, entry in enumerate(header.parent_locators):
        child = hnode.find(f"parent_locators[{i}]")
        if child is None:
            continue
        code = entry.platform_code
        if code == vhd.PlatformCode.NONE:
            child.summary = "unused"
            continue
        if not differencing:
            child.notes.append("a parent locator in a disk that is not differencing")
        reserved = locators.reserved_bytes(entry)
        length, at = entry.platform_data_length, entry.platform_data_offset
        space = child.field("platform_data_space")
        if space is not None:
            space.meaning = (f"{reserved} bytes reserved" if reserved is not None
                             else "neither a sector count nor a whole number of sectors")
        if reserved is None or length > reserved:
            child.damage.append(f"data length {length} does not fit the reserved space "
                                f"({entry.platform_data_space})")
        if at + length > reader.size:
            child.damage.append(f"locator data [{at:#x}, {at + length:#x}) lies past the end "
                                f"of the file")
            continue
        span = max(length, reserved or 0)
        if at + span > reader.size:
            span = reader.size - at
        data = reader.read(at, min(length, locators.MAX_LOCATOR))
        text = locators.decode(code, data)
        name = code.name if isinstance(code, vhd.PlatformCode) else f"{int(code):#x}"
        loc = root.add(Node(f"parent_locator_data[{i}]", at, span, "parent_locator_data"))
        loc.fields.append(Field("data", at, length, data[:64].hex() + ("..." if length > 64 else ""),
                                text, f"locator data, platform {name}"))
        loc.summary = f"{name}: {text!r}" if text is not None else f"{name}: not a path"
        child.summary = f"{name} -> {text!r}" if text is not None else f"{name}"
        child.fields.append(Field("path", at, length, text, "decoded locator data",
                                  "UTF-16LE for W2ru/W2ku, UTF-8 file URL for MacX"))
    if differencing:
        name = locators.parent_name(header)
        hnode.notes.append(f"parent: {name!r}" if name else "differencing disk without a parent name")


def _bat(root: Node, reader: Reader, header: vhd.DynamicHeader, footer: vhd.Footer, bs: int,
         footer_at: int, options: Options) -> None:
    size = reader.size
    table, n = header.table_offset, header.max_table_entries
    node = Node("bat", table, round_up(4 * n, SECTOR), "bat")
    root.add(node)
    avail = n
    if table % SECTOR:
        node.damage.append(f"table offset {table:#x} is not sector aligned")
    if table >= size:
        node.damage.append(f"the BAT at {table:#x} starts past the end of the file ({size} bytes)")
        avail = 0
    elif table + 4 * n > size:
        avail = (size - table) // 4
        node.damage.append(f"the BAT of {n} entries runs past the end of the file: only "
                           f"{avail} entries are in it")
    node.size = max(0, min(node.size, size - table))
    needed = ceil_div(geometry.virtual_size(footer), bs) if bs else 0
    if bs and n < needed:
        node.damage.append(f"{n} entries cannot map the disk: it needs {needed}")
    if bs and n > needed + EXTRA_ENTRIES and avail > needed:
        node.damage.append(f"{n} entries for a disk that needs {needed}: entries past "
                           f"{needed} are not read")
        avail = needed
    entries = vhd.Bat.parse(reader.read(table, 4 * avail), 0, num_entries=avail).entries \
        if avail else array("I")
    bitmap = round_up(ceil_div(bs // SECTOR, 8), SECTOR) if bs else 0
    span = bitmap + bs
    allocated = [(e * SECTOR, i) for i, e in enumerate(entries) if e != UNALLOCATED]
    past = [(at, i) for at, i in allocated if at + span > size]
    node.summary = (f"{n} entries, {len(allocated)} allocated, {n - len(allocated)} "
                    f"unallocated; blocks of {human_size(bs)} + {bitmap}-byte bitmap")
    node.fields += [
        Field("entries", table, 0, n, None, "max_table_entries from the dynamic header"),
        Field("allocated", table, 0, len(allocated), None, "entries other than 0xFFFFFFFF"),
        Field("unallocated", table, 0, avail - len(allocated), None, ""),
        Field("block_size", table, 0, bs, human_size(bs), "bytes of data per block"),
        Field("bitmap_bytes", table, 0, bitmap, None, "sector bitmap before each block's data"),
    ]
    for at, i in past[:MAX_LISTED]:
        node.damage.append(f"entry {i} points past the end of the file: block at {at:#x}, "
                           f"{span} bytes, file ends at {size:#x}")
    if len(past) > MAX_LISTED:
        node.damage.append(f"... and {len(past) - MAX_LISTED} more entries past the end")
    _duplicates(node, allocated)
    node.entry_format = (4, _label)
    if options.bat:
        node.table = Table(("index", "sector", "file_offset", "state", "note"), len(entries),
                           lambda i: _row(entries, i, span, size))
    inside = sorted((at, i) for at, i in allocated if at + span <= size)
    for run in run_nodes(root, inside, span, "data_blocks", "block", size):
        run.fields.append(Field("bitmap_bytes", run.offset, 0, bitmap, None,
                                "each block starts with its sector bitmap (MSB first)"))
    last_end = max((at + span for at, _ in inside), default=node.end)
    if footer_at < size and footer_at < last_end:
        root.damage.append(f"the footer at {footer_at:#x} lies inside the data blocks")


def _label(i: int, raw: bytes) -> str:
    if len(raw) < 4:
        return f"[{i}] (truncated)"
    e = int.from_bytes(raw[:4], BYTEORDER)
    return f"[{i}] unallocated" if e == UNALLOCATED else f"[{i}] block at {e * SECTOR:#x}"


def _row(entries: Any, i: int, span: int, size: int) -> tuple[int | str | None, ...]:
    e = int(entries[i])
    if e == UNALLOCATED:
        return i, e, None, "unallocated", ""
    at = e * SECTOR
    return i, e, at, "allocated", ("past the end of the file" if at + span > size else "")


def _duplicates(node: Node, allocated: list[tuple[int, int]]) -> None:
    seen: dict[int, int] = {}
    dups = []
    for at, i in allocated:
        if at in seen:
            dups.append(f"entries {seen[at]} and {i} point at the same block {at:#x}")
        else:
            seen[at] = i
    node.damage += dups[:MAX_LISTED]
    if len(dups) > MAX_LISTED:
        node.damage.append(f"... and {len(dups) - MAX_LISTED} more shared blocks")
