"""Dissecting VHDX images: the header section (file identifier, both headers, both region
tables), the metadata region and its items, the BAT with its payload / sector bitmap
interleave, the blocks it points at, and the log (see log.py)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Literal

from diskspec.formats import vhdx
from diskspec.formats.errors import CorruptError

from ..engines.vhdx import guids
from ..util import ceil_div
from . import log as vlog
from .common import (
    MiB,
    Reader,
    add_checks,
    checksum_verdict,
    decode,
    guid_text,
    human_size,
    run_nodes,
    signature_verdict,
    structure_node,
)
from .model import Field, Node, Table
from .options import Options

BYTEORDER: Literal["little"] = "little"
SIGNATURE = vhdx.FileIdentifier.FIELDS[0].contents or b"vhdxfile"
HEADER_SECTION = 1 * MiB
SLOT = 64 * 1024
HEADER_SLOTS = ((1, SLOT), (2, 2 * SLOT))
REGION_SLOTS = ((1, 3 * SLOT), (2, 4 * SLOT))
HEADER_SIZE = vhdx.Header.SIZE
SECTOR_BITMAP_BLOCK = 1 * MiB
MAX_LISTED = 10
BAT_CHUNK = 1 << 17  # entries read at a time

# Well-known GUIDs: the specification's from the VHDX engine's table; the three items only
# Microsoft's own implementation (openvmm) defines are named here. Tests check all of them
# against the docs of the generated codecs.
def _text(raw: bytes) -> str:
    return guids.text(raw).upper()


BAT_REGION = _text(guids.BAT_REGION)
METADATA_REGION = _text(guids.METADATA_REGION)
REGIONS = {BAT_REGION: "bat", METADATA_REGION: "metadata"}
ITEMS = {
    _text(guids.FILE_PARAMETERS): "file_parameters",
    _text(guids.VIRTUAL_DISK_SIZE): "virtual_disk_size",
    _text(guids.VIRTUAL_DISK_ID): "virtual_disk_id",
    _text(guids.LOGICAL_SECTOR_SIZE): "logical_sector_size",
    _text(guids.PHYSICAL_SECTOR_SIZE): "physical_sector_size",
    _text(guids.PARENT_LOCATOR): "parent_locator",
    "DA02D7BC-3D3A-423C-AC88-2A36AB21479B": "chs_parameters",
}
OTHER_ITEMS = {
    "71CC85F0-1B69-4E28-9558-C3BF83AE75D3": "incomplete_file",
    "10E1AE8A-4B7E-4169-A40F-CD70DE928393": "pmem_label_storage_area",
}
LOCATOR_TYPES = {_text(guids.VHDX_LOCATOR_TYPE): "VHDX parent locator"}

PAYLOAD = vhdx.PayloadBlockState
BITMAP = vhdx.SectorBitmapBlockState


def probe(head: bytes) -> bool:
    if head[:8] == SIGNATURE:
        return True
    # a damaged file identifier: recognise the headers or region tables behind it
    return any(head[at : at + 4] == b"head" for _, at in HEADER_SLOTS) or \
        any(head[at : at + 4] == b"regi" for _, at in REGION_SLOTS)


@dataclass
class Params:
    """What the metadata says, as far as it could be read."""

    block_size: int = 0
    logical_sector_size: int = 0
    virtual_size: int = 0
    has_parent: bool = False
    leave_allocated: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.block_size and self.logical_sector_size and self.virtual_size)

    @property
    def chunk_ratio(self) -> int:
        return (1 << 23) * self.logical_sector_size // self.block_size


def dissect(reader: Reader, root: Node, options: Options) -> None:
    size = reader.size
    if size < HEADER_SECTION:
        root.damage.append(f"the file ({size} bytes) is shorter than the 1 MiB header section")
    head = reader.read(0, HEADER_SECTION)
    _file_identifier(root, head)
    current = _headers(root, head)
    table = _region_tables(root, head)
    regions = _regions(root, table, size)
    params = Params()
    if "metadata" in regions:
        params = _metadata(root, reader, *regions["metadata"])
    else:
        root.damage.append("no metadata region: block size and disk size unknown")
    sub = "differencing" if params.has_parent else "fixed" if params.leave_allocated else "dynamic"
    root.fields.append(Field("subformat", 0, 0, sub if params.complete else None, None,
                             "from the file parameters item"))
    root.fields.append(Field("virtual_size", 0, 0, params.virtual_size or None,
                             human_size(params.virtual_size), "from the virtual disk size item"))
    if "bat" in regions:
        _bat(root, reader, *regions["bat"], params, options)
    else:
        root.damage.append("no BAT region: the blocks cannot be located")
    if current is not None:
        root.add(vlog.dissect(reader, current[1], current[0], options, root))


# -- header section ------------------------------------------------------------------------


def _file_identifier(root: Node, head: bytes) -> None:
    record, problems = decode(vhdx.FileIdentifier, head, 0, byteorder=BYTEORDER)
    node = structure_node("file_identifier", "file_identifier", record, 0, SLOT, vhdx, problems)
    add_checks(node, signature_verdict(node))
    if record is not None:
        node.summary = f"creator {record.creator.split(chr(0), 1)[0]!r}"
    root.add(node)


def _headers(root: Node, head: bytes) -> tuple[int, vhdx.Header] | None:
    """Both headers; returns (slot number, header) of the current one."""
    found: list[tuple[int, vhdx.Header, bool, Node]] = []
    for number, at in HEADER_SLOTS:
        raw = head[at : at + HEADER_SIZE]
        record, problems = decode(vhdx.Header, raw, 0, byteorder=BYTEORDER)
        node = structure_node(f"header{number}", "header", record, at, HEADER_SIZE, vhdx,
                              problems)
        root.add(node)
        if record is None:
            continue
        sig = signature_verdict(node)
        crc = checksum_verdict(vhdx.Header, record, raw, 0, at)
        add_checks(node, sig, crc)
        valid = crc.ok and (sig is None or sig.ok) and record.version == 1
        for fld in node.fields:
            if fld.name.endswith("_guid"):
                raw_guid = getattr(record, fld.name)
                fld.meaning = "zero" if not any(raw_guid) else guid_text(raw_guid)
                if fld.name == "log_guid":
                    fld.meaning = ("zero: the log is empty" if not any(raw_guid)
                                   else f"{guid_text(raw_guid)}: log entries may need replay")
            elif fld.name in ("log_length", "log_offset"):
                fld.meaning = human_size(int(fld.value or 0))
        found.append((number, record, valid, node))
    valid = [(n, r, node) for n, r, ok, node in found if ok]
    for _n, r, ok, node in found:
        if not ok:
            node.notes.append("invalid (bad signature, checksum or version): not usable")
            node.summary = f"invalid, sequence {r.sequence_number}"
    if not valid:
        root.damage.append("no valid header: the file is corrupt per the specification")
        if not found:
            return None
        n, r, _ok, node = found[0]
        node.notes.append("used anyway to locate the log (best effort)")
        root.fields.append(Field("current_header", n * SLOT, HEADER_SIZE, None, "none valid", ""))
        return n, r
    best = max(valid, key=lambda t: (t[1].sequence_number, -t[0]))
    for n, r, node in valid:
        if n == best[0]:
            node.notes.append("current header (valid, highest sequence number)")
            node.summary = f"current, sequence {r.sequence_number}"
        else:
            node.notes.append(f"valid, not current (sequence {r.sequence_number} vs "
                              f"{best[1].sequence_number})")
            node.summary = f"not current, sequence {r.sequence_number}"
    if len(valid) == 2 and valid[0][1].sequence_number == valid[1][1].sequence_number:
        root.notes.append("both headers have the same sequence number: header 1 is used")
    root.fields.append(Field("current_header", best[0] * SLOT, HEADER_SIZE, best[0],
                             f"header{best[0]}", "the valid header with the higher sequence"))
    return best[0], best[1]


def _region_tables(root: Node, head: bytes) -> vhdx.RegionTable | None:
    tables: list[tuple[int, vhdx.RegionTable, bool]] = []
    raws: list[bytes] = []
    for number, at in REGION_SLOTS:
        raw = head[at : at + SLOT]
        raws.append(raw)
        record, problems = decode(vhdx.RegionTable, raw, 0, byteorder=BYTEORDER)
        node = structure_node(f"region_table{number}", "region_table", record, at, SLOT, vhdx,
                              problems)
        root.add(node)
        if record is None:
            continue
        sig = signature_verdict(node)
        crc = checksum_verdict(vhdx.RegionTable, record, raw, 0, at)
        add_checks(node, sig, crc)
        for child in node.children:
            guid = child.field("guid")
            if guid is not None:
                raw_guid = bytes.fromhex(str(guid.value))
                text = guid_text(raw_guid)
                region = REGIONS.get(text)
                guid.meaning = f"{text} ({region} region)" if region else f"{text} (unknown region)"
                child.summary = f"{region or 'unknown'} region at {child.value('file_offset'):#x}"
        node.summary = f"{record.entry_count} entries"
        tables.append((number, record, crc.ok and (sig is None or sig.ok) and not problems))
    if len(raws) == 2 and raws[0] == raws[1] and raws[0]:
        root.notes.append("region tables 1 and 2 are identical")
    elif len(tables) == 2:
        root.damage.append("region tables 1 and 2 differ")
    good = [t for t in tables if t[2]]
    if good:
        number, record, _ = good[0]
        root.fields.append(Field("region_table_used", number * SLOT + 2 * SLOT, SLOT, number,
                                 f"region_table{number}", "the first valid copy"))
        return record
    if tables:
        root.damage.append("no valid region table: using a damaged one (best effort)")
        return tables[0][1]
    root.damage.append("no region table could be decoded")
    return None


def _regions(root: Node, table: vhdx.RegionTable | None, size: int) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    if table is None:
        return out
    for entry in table.entries:
        text = guid_text(entry.guid)
        name = REGIONS.get(text)
        if name is None:
            if entry.required:
                root.damage.append(f"unknown required region {text}: the file must not be opened")
            else:
                root.notes.append(f"unknown optional region {text} at {entry.file_offset:#x}")
                root.add(Node(f"region@{entry.file_offset:#x}", entry.file_offset,
                              max(0, min(entry.length, size - entry.file_offset)), "region",
                              f"unknown region {text}"))
            continue
        if name in out:
            root.damage.append(f"the {name} region is listed twice")
            continue
        if entry.file_offset < HEADER_SECTION or entry.file_offset % MiB or entry.length % MiB:
            root.damage.append(f"the {name} region [{entry.file_offset:#x}, +{entry.length:#x}) "
                               "is not 1 MiB aligned outside the header section")
        if entry.file_offset + entry.length > size:
            root.damage.append(f"the {name} region [{entry.file_offset:#x}, "
                               f"{entry.file_offset + entry.length:#x}) runs past the end of "
                               f"the file ({size:#x}): truncated")
        out[name] = (entry.file_offset, entry.length)
    return out


# -- metadata ------------------------------------------------------------------------------


def _metadata(root: Node, reader: Reader, offset: int, length: int) -> Params:
    params = Params()
    inside = max(0, min(length, reader.size - offset))
    region = root.add(Node("metadata", offset, inside, "metadata_region",
                           f"metadata region, {human_size(length)}"))
    table_raw = reader.read(offset, min(SLOT, inside))
    tnode = region.add(Node("table", offset, min(SLOT, inside), "metadata_table"))
    header, problems = decode(vhdx.MetadataTableHeader, table_raw, 0, byteorder=BYTEORDER)
    hnode = structure_node("header", "metadata_table_header", header, offset, 32, vhdx, problems)
    add_checks(hnode, signature_verdict(hnode))
    tnode.add(hnode)
    if header is None:
        region.damage.append("the metadata table cannot be read")
        return params
    count = min(header.entry_count, (len(table_raw) - 32) // 32 if len(table_raw) > 32 else 0)
    if count < header.entry_count:
        tnode.damage.append(f"entry count {header.entry_count} does not fit the 64 KiB table: "
                            f"{count} entries read")
    seen: dict[tuple[str, int], str] = {}
    spans: list[tuple[int, int, str]] = []
    for i in range(count):
        entry, eproblems = decode(vhdx.MetadataTableEntry, table_raw, 32 + 32 * i,
                                  byteorder=BYTEORDER)
        enode = structure_node(f"entry[{i}]", "metadata_table_entry", entry,
                               offset + 32 + 32 * i, 32, vhdx, eproblems)
        tnode.add(enode)
        if entry is None:
            continue
        text = guid_text(entry.item_id)
        name = ITEMS.get(text) or OTHER_ITEMS.get(text)
        gfield = enode.field("item_id")
        if gfield is not None:
            gfield.meaning = f"{text} ({name or 'unknown item'})"
        flags = [f for f in ("is_user", "is_virtual_disk", "is_required") if getattr(entry, f)]
        enode.summary = f"{name or text} at +{entry.offset:#x}, {entry.length} bytes" + \
            (f" [{', '.join(flags)}]" if flags else "")
        key = (text, entry.is_user)
        if key in seen:
            enode.damage.append(f"item {text} is listed twice")
            continue
        seen[key] = name or text
        if name is None or name in OTHER_ITEMS.values():
            if entry.is_required:
                enode.damage.append(f"{'unknown' if name is None else name} item {text} is "
                                    "required: implementations must refuse to open the file")
            else:
                enode.notes.append("an item this tool does not decode")
        if entry.length == 0:
            continue
        if entry.length > MiB:
            enode.damage.append(f"item of {entry.length} bytes: items hold at most 1 MiB; "
                                "not read")
            continue
        if entry.offset < SLOT or entry.offset + entry.length > length:
            enode.damage.append(f"item [{entry.offset:#x}, +{entry.length:#x}) is not inside the "
                                "metadata region after its table")
            continue
        at = offset + entry.offset
        if at + entry.length > reader.size:
            enode.damage.append(f"item at {at:#x} lies past the end of the file")
            continue
        spans.append((entry.offset, entry.offset + entry.length, name or text))
        raw = reader.read(at, entry.length)
        _item(region, name, text, raw, at, params)
    spans.sort()
    for (_s1, e1, n1), (s2, _e2, n2) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            region.damage.append(f"metadata items {n1} and {n2} overlap at +{s2:#x}")
    missing = [n for n in ("file_parameters", "virtual_disk_size", "logical_sector_size")
               if n not in seen.values()]
    if missing:
        region.damage.append(f"required item(s) missing: {', '.join(missing)}")
    if params.has_parent and "parent_locator" not in seen.values():
        region.damage.append("has_parent is set but there is no parent locator")
    return params


def _item(region: Node, name: str | None, text: str, raw: bytes, at: int, params: Params) -> None:
    label = name or f"item_{text.lower()}"
    if region.find(label) is not None:
        label = f"{label}@{at:#x}"
    if name == "parent_locator":
        region.add(_parent_locator(label, raw, at))
        return
    cls: Any = vhdx.TYPES.get(name or "")
    if cls is None:
        node = region.add(Node(label, at, len(raw), "metadata_item", f"item {text}"))
        node.fields.append(Field("data", at, len(raw), raw[:64].hex() + ("..." if len(raw) > 64
                                                                          else ""), None, ""))
        return
    record, problems = decode(cls, raw, 0, byteorder=BYTEORDER)
    node = structure_node(label, name or "", record, at, len(raw), vhdx, problems)
    region.add(node)
    if record is None:
        return
    if cls.SIZE and len(raw) != cls.SIZE:
        node.notes.append(f"item is {len(raw)} bytes, the type {cls.SIZE}")
    if isinstance(record, vhdx.FileParameters):
        params.block_size = record.block_size if not problems else 0
        params.has_parent = bool(record.has_parent)
        params.leave_allocated = bool(record.leave_blocks_allocated)
        node.summary = (f"block size {human_size(record.block_size)}"
                        + (", has parent" if record.has_parent else "")
                        + (", leave blocks allocated" if record.leave_blocks_allocated else ""))
    elif isinstance(record, vhdx.VirtualDiskSize):
        params.virtual_size = record.virtual_disk_size if not problems else 0
        node.summary = human_size(record.virtual_disk_size)
    elif isinstance(record, vhdx.LogicalSectorSize):
        params.logical_sector_size = record.logical_sector_size if not problems else 0
        node.summary = f"{record.logical_sector_size} bytes"
    elif isinstance(record, vhdx.PhysicalSectorSize):
        node.summary = f"{record.physical_sector_size} bytes"
    elif isinstance(record, vhdx.VirtualDiskId):
        node.summary = guid_text(record.virtual_disk_id)
        node.fields[0].meaning = node.summary
    for fld in node.fields:
        if fld.name == "block_size" or fld.name == "virtual_disk_size":
            fld.meaning = human_size(int(fld.value or 0))


def _parent_locator(label: str, raw: bytes, at: int) -> Node:
    node = Node(label, at, len(raw), "parent_locator")
    header, problems = decode(vhdx.ParentLocatorHeader, raw, 0, byteorder=BYTEORDER)
    hnode = structure_node("header", "parent_locator_header", header, at, 20, vhdx, problems)
    node.add(hnode)
    if header is None:
        return node
    ltype = guid_text(header.locator_type)
    known = LOCATOR_TYPES.get(ltype)
    hnode.fields[0].meaning = f"{ltype} ({known or 'unknown locator type'})"
    if known is None:
        node.damage.append(f"unknown parent locator type {ltype}")
    count = min(header.key_value_count, max(0, (len(raw) - 20) // 12))
    if count < header.key_value_count:
        node.damage.append(f"{header.key_value_count} key/value entries do not fit the "
                           f"{len(raw)}-byte item: {count} read")
    pairs: dict[str, str] = {}
    for i in range(count):
        entry, eproblems = decode(vhdx.ParentLocatorEntry, raw, 20 + 12 * i, byteorder=BYTEORDER)
        enode = structure_node(f"entry[{i}]", "parent_locator_entry", entry, at + 20 + 12 * i,
                               12, vhdx, eproblems)
        node.add(enode)
        if entry is None:
            continue
        try:
            key, value = entry.key, entry.value
        except CorruptError as exc:
            enode.damage.append(f"bad key or value: {exc}")
            continue
        enode.fields.append(Field("key", at + entry.key_offset, entry.key_length, key,
                                  None, "UTF-16LE"))
        enode.fields.append(Field("value", at + entry.value_offset, entry.value_length, value,
                                  None, "UTF-16LE"))
        enode.summary = f"{key} = {value}"
        if key in pairs:
            enode.damage.append(f"key {key!r} appears twice")
        pairs[key] = value
        node.fields.append(Field(key, at + entry.value_offset, entry.value_length, value,
                                 "parent locator key", ""))
    if "parent_linkage" not in pairs:
        node.damage.append("no parent_linkage key")
    if not {"relative_path", "volume_path", "absolute_win32_path"} & pairs.keys():
        node.damage.append("no path key (relative_path, volume_path or absolute_win32_path)")
    node.summary = ", ".join(f"{k}={v}" for k, v in pairs.items())
    return node


# -- BAT -----------------------------------------------------------------------------------


@dataclass
class _Bat:
    """What one pass over the BAT found (bounded: allocated blocks must fit in the file)."""

    payload_states: dict[int, int]
    bitmap_states: dict[int, int]
    blocks: list[tuple[int, int]]  # (file offset, payload block number), inside the file
    bitmaps: list[tuple[int, int]]  # (file offset, chunk number), inside the file
    anchors: list[tuple[int, int]]  # (file offset, payload block number): soft anchors


def _bat(root: Node, reader: Reader, offset: int, length: int, params: Params,
         options: Options) -> None:
    size = reader.size
    node = root.add(Node("bat", offset, max(0, min(length, size - offset)), "bat"))
    if params.complete and params.block_size and params.block_size & (params.block_size - 1) == 0:
        bs, cr = params.block_size, params.chunk_ratio
        data_blocks = ceil_div(params.virtual_size, bs)
        if params.has_parent:
            total = ceil_div(data_blocks, cr) * (cr + 1)
        else:
            total = data_blocks + (data_blocks - 1) // cr if data_blocks else 0
        node.fields += [
            Field("block_size", offset, 0, bs, human_size(bs), "from the file parameters"),
            Field("chunk_ratio", offset, 0, cr, None,
                  "payload blocks per sector bitmap block: 2^23 * logical sector size / block size"),
            Field("interleave", offset, 0,
                  f"payload block b is entry b + b // {cr}; the sector bitmap of chunk k is "
                  f"entry k * {cr + 1} + {cr}", None, ""),
            Field("data_blocks", offset, 0, data_blocks, None, "ceil(virtual size / block size)"),
        ]
    else:
        bs, cr = 0, 0
        total = length // 8
        node.notes.append("the metadata is incomplete: every entry is shown as a payload entry")
    node.fields.append(Field("entries", offset, 0, total, None,
                             "TotalBATEntries of the specification"))
    if total * 8 > length:
        node.damage.append(f"the BAT region ({length} bytes) is too small for {total} entries")
        total = length // 8
    avail = max(0, min(total, (size - offset) // 8)) if offset < size else 0
    if avail < total:
        node.damage.append(f"the file ends inside the BAT: {avail} of {total} entries are present")
    found = _scan_bat(node, reader, offset, avail, bs, cr, params, size)
    _bat_summary(node, found, cr)
    node.entry_format = (8, lambda i, raw: _label(i, raw, cr))
    if options.bat:
        raw = reader.read(offset, 8 * avail)
        entries = vhdx.Bat.parse(raw, 0, num_entries=avail).entries
        node.table = Table(("index", "type", "number", "state", "state_name", "file_offset",
                            "note"), avail, lambda i: _row(entries, i, cr, bs, size))
    blocks = sorted(found.blocks)
    _shared(node, sorted(found.blocks + found.bitmaps))
    run_nodes(root, blocks, bs or MiB, "payload_blocks", "payload block", size)
    run_nodes(root, sorted(found.bitmaps), SECTOR_BITMAP_BLOCK, "sector_bitmap_blocks", "chunk",
              size)
    if found.anchors:
        node.notes.append(f"{len(found.anchors)} UNDEFINED/UNMAPPED entries keep a file offset "
                          "(soft anchors: old contents may remain there)")


def _scan_bat(node: Node, reader: Reader, offset: int, count: int, bs: int, cr: int,
              params: Params, size: int) -> _Bat:
    out = _Bat({}, {}, [], [], [])
    bad: list[str] = []
    nbad = 0
    reserved_bits = 0
    last_block = ceil_div(params.virtual_size, bs) - 1 if bs else -1
    for first in range(0, count, BAT_CHUNK):
        n = min(BAT_CHUNK, count - first)
        raw = reader.read(offset + 8 * first, 8 * n)
        if _count_plain(raw, first, cr, out):
            continue  # only states without offsets or reserved bits: counted in bulk
        entries = vhdx.Bat.parse(raw, 0, num_entries=n).entries
        for j in range(n):
            e = entries[j]
            i = first + j
            state = e & 7
            at = (e >> 20) << 20
            if e & 0xFFFF8:
                reserved_bits += 1
            if cr and i % (cr + 1) == cr:  # a sector bitmap entry
                k = i // (cr + 1)
                out.bitmap_states[state] = out.bitmap_states.get(state, 0) + 1
                if state == BITMAP.PRESENT:
                    problem = _where(at, SECTOR_BITMAP_BLOCK, size)
                    if not params.has_parent:
                        problem = problem or "a present sector bitmap in a file without parent"
                    if problem is None:
                        out.bitmaps.append((at, k))
                    else:
                        nbad += 1
                        bad.append(f"sector bitmap entry {i} (chunk {k}): {problem}")
                elif state != BITMAP.NOT_PRESENT:
                    nbad += 1
                    bad.append(f"sector bitmap entry {i} (chunk {k}): invalid state {state}")
                continue
            b = i - i // (cr + 1) if cr else i
            out.payload_states[state] = out.payload_states.get(state, 0) + 1
            if state in (PAYLOAD.FULLY_PRESENT, PAYLOAD.PARTIALLY_PRESENT):
                need = bs
                if b == last_block and params.virtual_size % bs:
                    need = params.virtual_size - b * bs  # a partial last block is tolerated
                problem = _where(at, need or MiB, size)
                if state == PAYLOAD.PARTIALLY_PRESENT and not params.has_parent:
                    problem = problem or "PARTIALLY_PRESENT in a file without parent"
                if problem is None:
                    out.blocks.append((at, b))
                else:
                    nbad += 1
                    bad.append(f"payload entry {i} (block {b}): {problem}")
            elif state in (PAYLOAD.UNDEFINED, PAYLOAD.UNMAPPED, PAYLOAD.UNMAPPED_V095):
                if at:
                    out.anchors.append((at, b))
            elif state in (PAYLOAD.NOT_PRESENT, PAYLOAD.ZERO):
                if at and len(node.notes) < MAX_LISTED:
                    node.notes.append(f"payload entry {i} ({PAYLOAD(state).name}) carries file "
                                      f"offset {at:#x} (should be 0)")
            else:
                nbad += 1
                bad.append(f"payload entry {i} (block {b}): invalid state {state}")
    node.damage += bad[:MAX_LISTED]
    if nbad > MAX_LISTED:
        node.damage.append(f"... and {nbad - MAX_LISTED} more bad entries")
    if reserved_bits:
        node.damage.append(f"{reserved_bits} entries have reserved bits 3-19 set")
    return out


_STATE_BITS = bytes(b & 7 for b in range(256))
_NOT_STATE_BITS = bytes(b & ~7 & 0xFF for b in range(256))
#: states that need nothing but counting when their offset is zero
_PLAIN = (PAYLOAD.NOT_PRESENT, PAYLOAD.UNDEFINED, PAYLOAD.ZERO, PAYLOAD.UNMAPPED)


def _count_plain(raw: bytes, first: int, cr: int, out: _Bat) -> bool:
    """Count a chunk of BAT entries without a loop over them when every entry is in a
    state that needs no more than counting (no offset, no reserved bit, no allocation);
    False when the chunk needs the entry by entry look."""
    low = raw[0::8]
    rest = bytearray(raw)
    rest[0::8] = low.translate(_NOT_STATE_BITS)
    if rest.count(0) != len(rest):
        return False
    states = low.translate(_STATE_BITS)
    if cr:
        s0 = (cr - first) % (cr + 1)
        bitmap = states[s0 :: cr + 1]
    else:
        bitmap = b""
    if any(bitmap.count(bytes([s])) for s in range(1, 8)):
        return False  # a sector bitmap state other than NOT_PRESENT
    counts = {s: states.count(bytes([s])) for s in range(8)}
    if any(counts[s] for s in range(8) if s not in _PLAIN):
        return False
    nb = len(bitmap)
    if nb:
        out.bitmap_states[BITMAP.NOT_PRESENT] = out.bitmap_states.get(BITMAP.NOT_PRESENT, 0) + nb
        counts[0] -= nb
    for s, c in counts.items():
        if c:
            out.payload_states[s] = out.payload_states.get(s, 0) + c
    return True


def _where(at: int, need: int, size: int) -> str | None:
    if at < HEADER_SECTION:
        return f"file offset {at:#x} points into the header section"
    if at + need > size:
        return (f"block at {at:#x} ({human_size(need)}) runs past the end of the file "
                f"({size:#x})" if at < size else
                f"points past the end of the file: block at {at:#x}, file ends at {size:#x}")
    return None


def _bat_summary(node: Node, found: _Bat, cr: int) -> None:
    def names(states: dict[int, int], enum: Any) -> str:
        parts = []
        for state, n in sorted(states.items()):
            try:
                label = enum(state).name
            except ValueError:
                label = f"invalid {state}"
            parts.append(f"{label} {n}")
        return ", ".join(parts) or "none"

    payload = names(found.payload_states, PAYLOAD)
    node.fields.append(Field("payload_entries", node.offset, 0,
                             sum(found.payload_states.values()), payload, "counts per state"))
    for state, n in sorted(found.payload_states.items()):
        label = _state_name(PAYLOAD, state)
        node.fields.append(Field(f"payload.{label}", node.offset, 0, n, None, ""))
    if cr:
        bitmap = names(found.bitmap_states, BITMAP)
        node.fields.append(Field("sector_bitmap_entries", node.offset, 0,
                                 sum(found.bitmap_states.values()), bitmap, "counts per state"))
        for state, n in sorted(found.bitmap_states.items()):
            label = _state_name(BITMAP, state)
            node.fields.append(Field(f"sector_bitmap.{label}", node.offset, 0, n, None, ""))
    node.summary = f"payload: {payload}" + (f"; sector bitmaps: {bitmap}" if cr else "")


def _state_name(enum: Any, state: int) -> str:
    try:
        return str(enum(state).name)
    except ValueError:
        return f"INVALID_{state}"


def _row(entries: array[int], i: int, cr: int, bs: int, size: int) -> tuple[int | str | None, ...]:
    e = int(entries[i])
    state, at = e & 7, (e >> 20) << 20
    if cr and i % (cr + 1) == cr:
        kind, number, name = "sector_bitmap", i // (cr + 1), _state_name(BITMAP, state)
        need = SECTOR_BITMAP_BLOCK
        used = state == BITMAP.PRESENT
    else:
        kind, number, name = "payload", (i - i // (cr + 1) if cr else i), _state_name(PAYLOAD, state)
        need = bs or MiB
        used = state in (PAYLOAD.FULLY_PRESENT, PAYLOAD.PARTIALLY_PRESENT)
    note = ""
    if used and at + need > size:
        note = "past the end of the file"
    elif used and at < HEADER_SECTION:
        note = "inside the header section"
    elif at and not used:
        note = "offset kept (soft anchor)" if state in (1, 3, 5) else "offset should be 0"
    return i, kind, number, state, name, at if (used or at) else None, note


def _label(i: int, raw: bytes, cr: int) -> str:
    if len(raw) < 8:
        return f"[{i}] (truncated)"
    e = vhdx.BatEntry.parse(raw)
    if cr and i % (cr + 1) == cr:
        return f"[{i}] bitmap {i // (cr + 1)} {_state_name(BITMAP, int(e.state))} @{e.file_offset:#x}"
    number = i - i // (cr + 1) if cr else i
    return f"[{i}] block {number} {_state_name(PAYLOAD, int(e.state))} @{e.file_offset:#x}"


def _shared(node: Node, blocks: list[tuple[int, int]]) -> None:
    dups = []
    for (a, i), (b, j) in zip(blocks, blocks[1:], strict=False):
        if a == b:
            dups.append(f"blocks {i} and {j} share file offset {a:#x}")
    node.damage += dups[:MAX_LISTED]
    if len(dups) > MAX_LISTED:
        node.damage.append(f"... and {len(dups) - MAX_LISTED} more shared offsets")
