"""The VHDX log: every `loge` entry found at a 4 KiB step of the log region, its CRC-32C
(over entry_length bytes, wrapping at the end of the log), descriptors and data sectors,
the sequences the valid ones form and whether one of them still needs replaying."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import crc32c as _crc32c

from diskspec.formats import vhdx

from .common import (
    KiB,
    MiB,
    Reader,
    add_checks,
    decode,
    guid_text,
    human_size,
    signature_verdict,
    structure_node,
)
from .model import Field, Node, Verdict
from .options import Options

BYTEORDER: Literal["little"] = "little"
SECTOR = 4 * KiB
ENTRY_MAGIC = vhdx.LogEntryHeader.FIELDS[0].contents or b"loge"
ZERO_MAGIC = vhdx.ZeroDescriptor.FIELDS[0].contents or b"zero"
DATA_MAGIC = vhdx.DataDescriptor.FIELDS[0].contents or b"desc"
HEADER = vhdx.LogEntryHeader.SIZE
DESCRIPTOR = vhdx.ZeroDescriptor.SIZE
#: descriptor and data sector nodes listed per entry (the rest are counted)
MAX_PARTS = 256
#: a descriptor area larger than this is not read (the count is implausible)
MAX_DESCRIPTOR_AREA = 16 * MiB


@dataclass
class Budget:
    """Bytes the log scan may still read for checksums, descriptors and data sectors: entries
    whose lengths overlap (a hostile log) cannot make it read the log over and over."""

    left: int

    def take(self, n: int) -> bool:
        if n > self.left:
            return False
        self.left -= n
        return True


@dataclass
class Entry:
    """A log entry as dissected: its node, its header (when it parses) and verdicts."""

    pos: int  # offset inside the log
    node: Node
    header: vhdx.LogEntryHeader | None
    crc_ok: bool = False
    sane: bool = False  # rules, descriptors and data sectors all fine
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.header is not None and self.crc_ok and self.sane


def dissect(reader: Reader, header: vhdx.Header, slot: int, options: Options,
            root: Node | None = None) -> Node:
    size = reader.size
    off, length = header.log_offset, header.log_length
    dirty = any(header.log_guid)
    node = Node("log", off, max(0, min(length, size - off)), "log")
    node.fields += [
        Field("log_offset", slot * 64 * KiB + 72, 8, off, human_size(off), f"from header{slot}"),
        Field("log_length", slot * 64 * KiB + 68, 4, length, human_size(length),
              f"from header{slot}"),
        Field("log_guid", slot * 64 * KiB + 48, 16, header.log_guid.hex(),
              guid_text(header.log_guid) if dirty else "zero", f"from header{slot}"),
        Field("dirty", slot * 64 * KiB + 48, 16, dirty,
              "log_guid is not zero: entries with that GUID must be replayed before use"
              if dirty else "log_guid is zero: nothing to replay", ""),
    ]
    if length == 0:
        node.summary = "no log"
        if dirty:
            node.damage.append("log_guid is set but log_length is 0")
        return node
    if off < MiB:
        node.damage.append(f"the log at {off:#x} overlaps the header section")
    if off >= size:
        node.damage.append(f"the log at {off:#x} starts past the end of the file ({size:#x})")
        node.size = 0
        return node
    avail = min(length, size - off)
    if avail < length:
        node.damage.append(f"the log region is truncated: the file ends {avail} bytes into the "
                           f"{length}-byte log")
    entries: list[Entry] = []
    budget = Budget(3 * avail + 64 * MiB)  # a sound log needs about twice its size
    more = 0
    for base in range(0, avail, MiB):
        chunk = reader.read(off + base, min(MiB, avail - base))
        for p in range(0, len(chunk), SECTOR):
            if chunk[p : p + 4] != ENTRY_MAGIC:
                continue
            if len(entries) >= options.max_log_entries:
                more += 1
                continue
            entry = _entry(reader, header, off, length, avail, base + p, len(entries), budget)
            entries.append(entry)
            node.add(entry.node)
    if more:
        node.notes.append(f"{more} more log entries not listed")
    _sequences(node, entries, header, length, size, dirty)
    if root is not None:
        _targets(node, root)
        if dirty:
            root.notes.append("the log is dirty (header log_guid is not zero): "
                              + ("its active sequence must be replayed before the BAT and "
                                 "metadata shown here are current" if node.value("replay_needed")
                                 else "but no complete sequence was found"))
    return node


def _entry(reader: Reader, header: vhdx.Header, off: int, length: int, avail: int, pos: int,
           index: int, budget: Budget) -> Entry:
    raw = reader.read(off + pos, SECTOR)
    record, problems = decode(vhdx.LogEntryHeader, raw, 0, byteorder=BYTEORDER)
    size = record.entry_length if record is not None else SECTOR
    size = size if 0 < size <= length and size % SECTOR == 0 else SECTOR
    node = structure_node(f"entry[{index}]", "log_entry_header", record, off + pos,
                          min(size, length - pos), vhdx, problems)
    node.kind = "log_entry"
    entry = Entry(pos, node, record)
    add_checks(node, signature_verdict(node))
    if record is None:
        return entry
    entry.problems += problems
    for fld in node.fields:
        if fld.name == "log_guid":
            fld.meaning = guid_text(record.log_guid)
        elif fld.name == "tail":
            fld.meaning = f"log offset {record.tail:#x} (file offset {off + record.tail:#x})"
        elif fld.name in ("flushed_file_offset", "last_file_offset"):
            fld.meaning = human_size(int(fld.value or 0))
    belongs = record.log_guid == header.log_guid
    node.notes.append("log GUID matches the current header" if belongs else
                      "log GUID differs from the current header's: left by writes already applied"
                      if not any(header.log_guid) else
                      "log GUID differs from the current header's: not part of the active log")
    n = record.entry_length
    if not (0 < n < length or n == length == SECTOR) or n % SECTOR:
        entry.problems.append(f"entry_length {n} is not a multiple of 4 KiB inside the "
                              f"{length}-byte log")
        node.damage.append(entry.problems[-1])
        node.summary = f"sequence {record.sequence_number}, unusable length"
        return entry
    if pos + n > length:
        node.notes.append(f"wraps: continues at the start of the log for {pos + n - length} bytes")
    # the bytes of the entry, in log order, wrapping at the end of the log
    segments = [(pos, min(n, length - pos))]
    if pos + n > length:
        segments.append((0, pos + n - length))
    missing = sum(max(0, s + k - avail) - max(0, s - avail) for s, k in segments)
    if missing:
        entry.problems.append(f"truncated: {missing} of its {n} bytes lie past the end of the file")
        node.damage.append(entry.problems[-1])
        node.verdicts.append(Verdict("checksum", False, "crc32c", record.checksum, None,
                                     off + pos + 4, (off + pos, n), "cannot compute: truncated"))
        node.summary = f"sequence {record.sequence_number}, truncated"
        return entry
    if not budget.take(n):
        node.verdicts.append(Verdict("checksum", False, "crc32c", record.checksum, None,
                                     off + pos + 4, (off + pos, n),
                                     "not computed: the log's read budget is spent"))
        node.notes.append("not verified: entries overlap too much to read them all")
        node.summary = f"sequence {record.sequence_number}, not verified"
        return entry
    crc = _crc(reader, off, segments)
    ok = crc == record.checksum
    entry.crc_ok = ok
    add_checks(node, Verdict("checksum", ok, "crc32c", record.checksum, crc, off + pos + 4,
                             (off + pos, n),
                             ("wraps at the end of the log; " if len(segments) > 1 else "")
                             + ("" if ok else f"stored {record.checksum:#010x}, computed "
                                f"{crc:#010x}")))
    entry.sane = not problems and _descriptors(entry, reader, off, length, record, budget)
    state = "valid" if entry.valid else "invalid"
    node.summary = (f"sequence {record.sequence_number}, {n // SECTOR} sector(s), "
                    f"{record.descriptor_count} descriptor(s), tail {record.tail:#x}: {state}")
    return entry


def _crc(reader: Reader, off: int, segments: list[tuple[int, int]]) -> int:
    """CRC-32C of the entry with its checksum field taken as zero, read in bounded chunks."""
    crc = 0
    first = True
    for start, n in segments:
        done = 0
        while done < n:
            chunk = reader.read(off + start + done, min(MiB, n - done))
            if not chunk:
                break
            if first:
                chunk = chunk[:4] + bytes(4) + chunk[8:]
                first = False
            crc = _crc32c.crc32c(chunk, crc)
            done += len(chunk)
    return crc


def _log_read(reader: Reader, off: int, length: int, pos: int, n: int) -> bytes:
    """n bytes at log offset pos, wrapping at the end of the log."""
    pos %= length
    first = reader.read(off + pos, min(n, length - pos))
    if n > length - pos:
        first += reader.read(off, n - (length - pos))
    return first


def _descriptors(entry: Entry, reader: Reader, off: int, length: int,
                 record: vhdx.LogEntryHeader, budget: Budget) -> bool:
    """Descriptor and data sector nodes; False when something is wrong with them."""
    node, n = entry.node, record.entry_length
    count = record.descriptor_count
    area = -(-(HEADER + DESCRIPTOR * count) // SECTOR) * SECTOR
    if area > n or area > MAX_DESCRIPTOR_AREA:
        node.damage.append(f"{count} descriptors do not fit the {n}-byte entry")
        return False
    if not budget.take(area):
        node.notes.append("descriptors not read: the log's read budget is spent")
        return False
    raw = _log_read(reader, off, length, entry.pos, area)
    fine = True
    data_descs: list[vhdx.DataDescriptor] = []
    listed = 0
    for i in range(count):
        at = HEADER + DESCRIPTOR * i
        magic = raw[at : at + 4]
        cls: type[vhdx.ZeroDescriptor] | type[vhdx.DataDescriptor]
        if magic == ZERO_MAGIC:
            cls, kind = vhdx.ZeroDescriptor, "zero_descriptor"
        elif magic == DATA_MAGIC:
            cls, kind = vhdx.DataDescriptor, "data_descriptor"
        else:
            node.damage.append(f"descriptor {i} has signature {magic!r}, not 'zero' or 'desc'")
            fine = False
            continue
        desc, problems = decode(cls, raw, at, byteorder=BYTEORDER)
        if desc is None:
            node.damage.append(f"descriptor {i}: {'; '.join(problems)}")
            fine = False
            continue
        if isinstance(desc, vhdx.DataDescriptor):
            data_descs.append(desc)
        bad = list(problems)
        if desc.sequence_number != record.sequence_number:
            bad.append(f"sequence {desc.sequence_number} differs from the entry's")
        fine = fine and not bad
        if listed < MAX_PARTS:
            file_at = off + (entry.pos + at) % length
            child = structure_node(f"descriptor[{i}]", kind, desc, file_at, DESCRIPTOR, vhdx, bad)
            # structure_node names fields from the codec; say what the descriptor does
            child.summary = (f"zero {desc.zero_length} bytes at {desc.file_offset:#x}"
                             if isinstance(desc, vhdx.ZeroDescriptor)
                             else f"write 4 KiB at {desc.file_offset:#x}")
            node.add(child)
            listed += 1
    if count > listed:
        node.notes.append(f"{count - listed} descriptor(s) not listed")
    expected = area + SECTOR * len(data_descs)
    if expected != n:
        node.notes.append(f"entry_length {n} differs from descriptor area + data sectors "
                          f"({expected}); openvmm rejects such entries")
        if expected > n:
            node.damage.append(f"{len(data_descs)} data sectors do not fit the entry")
            return False
    for k, _desc in enumerate(data_descs):
        if not budget.take(SECTOR):
            node.notes.append(f"data sectors from {k} on not read: the log's read budget is spent")
            return False
        rel = area + SECTOR * k
        raw_sector = _log_read(reader, off, length, entry.pos + rel, SECTOR)
        sector, problems = decode(vhdx.DataSector, raw_sector, 0, byteorder=BYTEORDER)
        bad = list(problems)
        if sector is not None and sector.sequence_number != record.sequence_number:
            bad.append(f"sequence {sector.sequence_number} differs from the entry's")
        if sector is None or bad:
            fine = False
        if k < MAX_PARTS:
            child = structure_node(f"data_sector[{k}]", "data_sector", sector,
                                   off + (entry.pos + rel) % length, SECTOR, vhdx, bad)
            add_checks(child, signature_verdict(child))
            fine = fine and not child.damage
            node.add(child)
    if len(data_descs) > MAX_PARTS:
        node.notes.append(f"{len(data_descs) - MAX_PARTS} data sector(s) not listed")
    return fine


def _sequences(node: Node, entries: list[Entry], header: vhdx.Header, length: int, size: int,
               dirty: bool) -> None:
    by_pos = {e.pos: e for e in entries if e.valid}
    valid = len(by_pos)
    node.fields.append(Field("entries_found", node.offset, 0, len(entries), None,
                             "'loge' signatures at 4 KiB steps"))
    node.fields.append(Field("entries_valid", node.offset, 0, valid, None,
                             "checksum, rules, descriptors and data sectors all correct"))
    guids = {e.header.log_guid for e in entries if e.header is not None}
    current = [e for e in entries if e.header is not None and e.header.log_guid == header.log_guid]
    node.fields.append(Field("entries_current_guid", node.offset, 0, len(current), None,
                             "entries carrying the current header's log GUID"))
    # runs of valid entries, each following the previous one with sequence + 1 (spec 2.3.3)
    best: list[Entry] = []
    for start in by_pos.values():
        assert start.header is not None
        run = [start]
        while len(run) <= len(by_pos):
            last = run[-1]
            assert last.header is not None
            nxt = by_pos.get((last.pos + last.header.entry_length) % length)
            if nxt is None or nxt.header is None or nxt is start or \
                    nxt.header.sequence_number != last.header.sequence_number + 1 or \
                    nxt.header.log_guid != start.header.log_guid:
                break
            run.append(nxt)
        head = run[-1].header
        assert head is not None
        if head.tail not in {e.pos for e in run}:
            continue
        tail_at = next(i for i, e in enumerate(run) if e.pos == head.tail)
        run = run[tail_at:]
        if dirty and head.log_guid != header.log_guid:
            continue
        best_head = best[-1].header if best else None
        if best_head is None or head.sequence_number > best_head.sequence_number:
            best = run
    if best:
        head = best[-1].header
        assert head is not None
        text = (f"{len(best)} entr{'y' if len(best) == 1 else 'ies'}, sequence "
                f"{best[0].header.sequence_number if best[0].header else '?'}-"
                f"{head.sequence_number}, tail {best[0].pos:#x}, head {best[-1].pos:#x}")
        node.fields.append(Field("active_sequence" if dirty else "newest_sequence", node.offset,
                                 0, text, guid_text(head.log_guid),
                                 "the complete sequence with the highest head sequence number"))
        for e in best:
            e.node.notes.append("in the active sequence: must be replayed" if dirty
                                else "in the newest complete sequence (already applied: the "
                                     "log is not dirty)")
        if dirty and head.flushed_file_offset > size:
            node.damage.append(f"the head entry says {head.flushed_file_offset} bytes were stable "
                               f"on disk, the file has {size}: the file is truncated")
    node.fields.append(Field("replay_needed", node.offset, 0, bool(dirty and best), None,
                             "the log is dirty and holds a complete sequence"))
    if dirty and not best:
        node.damage.append("the log is dirty but holds no complete valid sequence: the file is "
                           "corrupt per the specification")
    bad = [e for e in entries if not e.valid and e.header is not None and
           (e.header.log_guid == header.log_guid or not dirty)]
    state = "dirty" if dirty else "clean"
    node.summary = (f"{human_size(length)} log, {state}: {len(entries)} entr"
                    f"{'y' if len(entries) == 1 else 'ies'} found ({valid} valid, "
                    f"{len(current)} with the current GUID, {len(guids)} distinct GUID(s))")
    if not dirty and entries:
        # neutral on purpose: a file created and written once holds such entries too
        node.notes.append("entries remain from writes already applied to the file; the "
                          "header's zero log_guid means none of them is replayed")
    if dirty and bad:
        node.damage.append(f"{len(bad)} entr{'y' if len(bad) == 1 else 'ies'} with the current "
                           "log GUID are invalid")


def _targets(log: Node, root: Node) -> None:
    """Say which structure each descriptor's write lands in."""
    spans = [(n.offset, n.end, n.name) for n in root.children if n.size > 0]
    for entry in log.children:
        for child in entry.children:
            fld = child.field("file_offset")
            if fld is None or not isinstance(fld.value, int):
                continue
            at = fld.value
            hit = next(((s, name) for s, e, name in spans if s <= at < e), None)
            fld.meaning = f"in {hit[1]} (+{at - hit[0]:#x})" if hit else "outside every structure"
