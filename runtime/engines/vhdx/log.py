"""The VHDX log ([MS-VHDX] 2.3; vhdx.md 7-8): find the active sequence, replay it (into the
file, or into an in-memory overlay for read-only opens), and write new entries.

Every layout comes from the generated codecs; this module holds the rules: what makes an
entry valid, how a sequence is chosen, and in which order pages are applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from diskspec.formats import vhdx

from ...backend import Backend
from ...errors import CorruptError, UnsupportedFeatureError
from ...util import ceil_div

SECTOR = 4096
MIB = 1 << 20
#: the largest log we read into memory (QEMU requires < 4 GiB; real logs are 1 MiB)
MAX_LOG = 256 * MIB
HEADER = vhdx.LogEntryHeader.SIZE
DESCRIPTOR = 32


@dataclass
class Entry:
    """A valid log entry: its header and the writes its descriptors make."""

    offset: int  # in the log region
    header: vhdx.LogEntryHeader
    #: (file offset, 4096-byte page) or (file offset, zero length) per descriptor, in order
    writes: list[tuple[int, bytes | int]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.header.entry_length

    @property
    def sequence(self) -> int:
        return self.header.sequence_number


class Ring:
    """The log region as a circular buffer of bytes."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def read(self, at: int, length: int) -> bytes:
        at %= self.size
        if at + length <= self.size:
            return self.data[at : at + length]
        first = self.data[at:]
        return first + self.data[: length - len(first)]


def parse_entry(ring: Ring, at: int, log_guid: bytes) -> Entry | None:
    """The valid entry at log offset `at`, or None ([MS-VHDX] 2.3.3 validity rules)."""
    raw = ring.read(at, HEADER)
    if raw[:4] != b"loge":
        return None
    try:
        head = vhdx.LogEntryHeader.parse(raw)
    except CorruptError:
        return None
    length, count = head.entry_length, head.descriptor_count
    if head.log_guid != log_guid or head.sequence_number == 0 or length == 0 or \
            length % SECTOR or length >= ring.size or head.tail % SECTOR or head.tail >= ring.size:
        return None
    desc_area = ceil_div(HEADER + DESCRIPTOR * count, SECTOR) * SECTOR
    if desc_area > length:
        return None
    blob = ring.read(at, length)
    if vhdx.LogEntryHeader.checksum_of(blob) != head.checksum:
        return None
    entry = Entry(at, head)
    data_at = desc_area
    for i in range(count):
        d = blob[HEADER + DESCRIPTOR * i : HEADER + DESCRIPTOR * (i + 1)]
        try:
            if d[:4] == b"zero":
                z = vhdx.ZeroDescriptor.parse(d)
                if z.sequence_number != head.sequence_number or z.file_offset % SECTOR or \
                        z.zero_length % SECTOR:
                    return None
                entry.writes.append((z.file_offset, z.zero_length))
            elif d[:4] == b"desc":
                dd = vhdx.DataDescriptor.parse(d)
                if dd.sequence_number != head.sequence_number or dd.file_offset % SECTOR or \
                        data_at + SECTOR > length:
                    return None
                sector = vhdx.DataSector.parse(blob, data_at)
                if sector.sequence_number != head.sequence_number:
                    return None
                page = dd.leading_bytes + sector.data + dd.trailing_bytes
                entry.writes.append((dd.file_offset, page))
                data_at += SECTOR
            else:
                return None
        except CorruptError:
            return None
    if data_at != length:  # the entry holds exactly its descriptors' data sectors
        return None
    return entry


def active_sequence(ring: Ring, log_guid: bytes) -> list[Entry]:
    """The entries to replay, tail first ([MS-VHDX] 2.3.3 search); [] when none is valid."""
    best: list[Entry] = []
    cur = old = 0
    while True:
        seq: list[Entry] = []
        pos = cur
        while len(seq) * SECTOR < ring.size:
            e = parse_entry(ring, pos, log_guid)
            if e is None or (seq and e.sequence != seq[-1].sequence + 1):
                break
            seq.append(e)
            pos = (pos + e.length) % ring.size
            if pos == cur:
                break
        if seq:
            head = seq[-1]
            starts = [e.offset for e in seq]
            if head.header.tail in starts and (not best or head.sequence > best[-1].sequence):
                best = seq[starts.index(head.header.tail):]
            cur = (seq[-1].offset + seq[-1].length) % ring.size
        else:
            cur = (cur + SECTOR) % ring.size
        if cur <= old:
            break
        old = cur
    return best


def pages(entries: list[Entry]) -> Iterator[tuple[int, bytes | int]]:
    for e in entries:
        yield from e.writes


def read_log(backend: Backend, header: vhdx.Header) -> Ring:
    """The whole log region (bounded: its length was checked against the file and MAX_LOG)."""
    if header.log_length > MAX_LOG:
        raise UnsupportedFeatureError(f"a VHDX log of {header.log_length} bytes (the limit is {MAX_LOG})")
    if header.log_offset < MIB or header.log_offset + header.log_length > backend.size():
        raise CorruptError(f"log at {header.log_offset:#x} ({header.log_length} bytes) is outside the file",
                           offset=header.log_offset, path="header.log_offset")
    return Ring(backend.pread(header.log_offset, header.log_length))


def build_entry(sequence: int, tail: int, log_guid: bytes, flushed: int, last: int,
                writes: list[tuple[int, bytes]]) -> bytes:
    """One log entry holding full 4 KiB pages (data descriptors), checksummed."""
    count = len(writes)
    desc_area = ceil_div(HEADER + DESCRIPTOR * count, SECTOR) * SECTOR
    length = desc_area + SECTOR * count
    out = bytearray(length)
    head = vhdx.LogEntryHeader.new(entry_length=length, tail=tail, sequence_number=sequence,
                                   descriptor_count=count, log_guid=log_guid,
                                   flushed_file_offset=flushed, last_file_offset=last)
    out[:HEADER] = head.build()
    for i, (file_offset, page) in enumerate(writes):
        assert len(page) == SECTOR and file_offset % SECTOR == 0
        d = vhdx.DataDescriptor.new(trailing_bytes=page[4092:], leading_bytes=page[:8],
                                    file_offset=file_offset, sequence_number=sequence)
        out[HEADER + DESCRIPTOR * i : HEADER + DESCRIPTOR * (i + 1)] = d.build()
        s = vhdx.DataSector.new(sequence_high=sequence >> 32, data=page[8:4092],
                                sequence_low=sequence & 0xFFFFFFFF)
        out[desc_area + SECTOR * i : desc_area + SECTOR * (i + 1)] = s.build()
    checksum = vhdx.LogEntryHeader.checksum_of(bytes(out))
    out[4:8] = checksum.to_bytes(4, "little")
    return bytes(out)
