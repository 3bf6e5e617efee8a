"""What every format's dissector shares: read-only positioned reads that never raise for a
short file, lenient decoding with the generated codecs, and fields from their field tables.

Nothing here knows a layout: offsets, sizes, docs, enums and bit positions come from the
generated `FIELDS` tables; checksums from the generated `CHECKSUM_ALGORITHM` and the
checksum helpers of `formats/_codec.py`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from array import array
from collections.abc import Iterator
from enum import IntEnum
from types import ModuleType
from typing import Any, Literal

from diskspec.formats import _codec
from diskspec.formats.errors import CorruptError, TruncatedError, ValidationError

from .model import Field, Node, Verdict

KiB = 1 << 10
MiB = 1 << 20
#: byte fields longer than this are summarised in `value` ("4016 bytes, all zero")
SHOW_BYTES = 64
#: how many bytes one read may ask for (reads of bigger structures are split by callers)
READ_CHUNK = 1 * MiB


class Reader:
    """A file opened read-only; reads past the end come back short, never as an error."""

    def __init__(self, path: str | os.PathLike[str]):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(self.fd)
            # a block device reports size 0: its end is where seeking to the end lands
            self.size = st.st_size if stat.S_ISREG(st.st_mode) else \
                os.lseek(self.fd, 0, os.SEEK_END)
        except BaseException:
            os.close(self.fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (fewer only at the end of the file)."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        parts = []
        while length > 0:
            chunk = os.pread(self.fd, min(length, 64 * MiB), offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def data_ranges(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Sub-ranges of [start, end) that may hold data (holes of sparse files skipped)."""
        pos = start
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole until the end of the file
                return
            if data >= end:
                return
            try:
                hole = os.lseek(self.fd, data, os.SEEK_HOLE)
            except OSError:
                hole = end
            yield data, min(hole, end)
            pos = min(hole, end)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- text helpers ------------------------------------------------------------------------------


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n % scale else f"{n // scale} {unit}"
    return f"{n} B"


def guid_text(raw: bytes) -> str:
    """A GUID in the Microsoft mixed-endian layout, as text."""
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


def printable(raw: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in raw)


def bytes_value(raw: bytes) -> tuple[str, str | None]:
    """(value, meaning) for a byte field: hex (cut at SHOW_BYTES) and a summary."""
    raw = bytes(raw)
    nonzero = len(raw) - raw.count(0)
    if len(raw) <= SHOW_BYTES:
        return raw.hex(), ("all zero" if not nonzero and len(raw) > 1 else None)
    if not nonzero:
        return f"{len(raw)} bytes, all zero", "all zero"
    first = next(i for i, b in enumerate(raw) if b)
    return (raw[:SHOW_BYTES].hex() + "...",
            f"{nonzero} non-zero byte(s), the first at +{first:#x}")


def ascii_meaning(raw: bytes) -> str | None:
    """A tag that is printable ASCII ('conectix', 'qemu'), shown as text."""
    if raw and all(32 <= b < 127 or b == 0 for b in raw) and any(raw):
        return repr(raw.rstrip(b"\0").decode("ascii"))
    return None


def index_ranges(idx: list[int], limit: int = 200) -> str:
    """'0-3, 7, 9-12' for sorted or unsorted block numbers (cut after `limit` characters)."""
    parts: list[str] = []
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    text = ", ".join(parts)
    return text if len(text) <= limit else text[:limit].rsplit(",", 1)[0] + ", ..."


#: run nodes made at most; beyond it neighbouring runs are grouped into one node
MAX_RUNS = 4096


def run_nodes(root: Node, blocks: list[tuple[int, int]], span: int, kind: str, label: str,
              file_size: int) -> list[Node]:
    """One node per run of blocks that follow each other in the file; `blocks` is sorted
    (file offset, block number). A block listed twice (damage the caller reports) counts
    once; a run ends at the end of the file at the latest."""
    runs: list[tuple[int, int, list[int]]] = []  # (start, end, block numbers)
    last = -1
    for at, number in blocks:
        if at == last:
            continue
        if runs and at == runs[-1][1]:
            runs[-1] = (runs[-1][0], at + span, runs[-1][2])
            runs[-1][2].append(number)
        else:
            runs.append((at, at + span, [number]))
        last = at
    group = -(-len(runs) // MAX_RUNS) if runs else 1
    out: list[Node] = []
    for i in range(0, len(runs), group):
        part = runs[i : i + group]
        start, end = part[0][0], min(max(r[1] for r in part), file_size)
        numbers = [b for r in part for b in r[2]]
        node = root.add(Node(f"{kind}@{start:#x}", start, max(0, end - start), kind))
        node.summary = f"{len(numbers)} {label}(s): {index_ranges(numbers)}"
        node.fields += [
            Field("count", start, 0, len(numbers), None, ""),
            Field("numbers", start, 0, index_ranges(numbers), None,
                  f"{label} numbers, in file order"),
        ]
        if len(part) > 1:
            node.notes.append(f"{len(part)} separate runs grouped into one node (too many "
                              "runs to list): the space between them is not scanned")
        out.append(node)
    return out


# -- decoding with the generated codecs --------------------------------------------------------


def _lenient_class(cls: type[Any]) -> type[Any]:
    """The codec class with its `valid` rules turned off (flat types check them in one
    method after decoding), so a damaged structure still shows every field."""
    cached = _LENIENT.get(cls)
    if cached is None:
        cached = type(cls.__name__, (cls,), {"_check": lambda self, offset: None})
        _LENIENT[cls] = cached
    return cached


_LENIENT: dict[type[Any], type[Any]] = {}


def decode(cls: type[Any], buf: bytes, offset: int = 0, *,
           byteorder: Literal["little", "big"] = "little",
           **params: Any) -> tuple[Any | None, list[str]]:
    """Decode one structure; on a broken magic or rule decode it again leniently.

    Returns (record or None, problems). `contents` fields keep the bytes that are really
    there (their verdict is the node's "signature"); a field whose rule stops a variable
    type's decoder is decoded as zero and then given its real value (`byteorder` is the
    spec's endianness), so a hostile count cannot make the decoder loop.
    """
    try:
        return cls.parse(buf, offset, **params), []
    except TruncatedError as exc:
        return None, [f"truncated: {exc.reason}"]
    except ValidationError as exc:
        failure: CorruptError = exc
    except CorruptError as exc:
        return None, [_problem(exc)]
    rows = {r.name: r for r in cls.FIELDS}
    problems = [] if _is_magic(failure, rows) else [_problem(failure)]
    patched = bytearray(buf)
    for row in cls.FIELDS:
        if row.contents is not None and row.offset is not None:
            at = offset + row.offset
            if at + len(row.contents) <= len(patched):
                patched[at : at + len(row.contents)] = row.contents
    target = _lenient_class(cls) if hasattr(cls, "_check") else cls
    zeroed: list[tuple[str, int, int]] = []  # (name, offset, size) decoded as zero
    record = None
    for _attempt in range(8):
        try:
            record = target.parse(bytes(patched), offset, **params)
            break
        except ValidationError as exc:
            spot = _row_at(cls, exc, offset)
            if spot is None or spot in zeroed:
                problems.append(_problem(exc))
                return None, problems
            if not _is_magic(exc, rows) and _problem(exc) not in problems:
                problems.append(_problem(exc))
            _, at, n = spot
            patched[at : at + n] = bytes(n)
            zeroed.append(spot)
        except CorruptError as exc:
            problems.append(_problem(exc))
            return None, problems
    if record is None:
        return None, problems
    for row in cls.FIELDS:  # put the real magics back
        if row.contents is not None and row.offset is not None:
            at = offset + row.offset
            setattr(record, row.name, bytes(buf[at : at + len(row.contents)]))
    for name, at, n in zeroed:
        setattr(record, name, int.from_bytes(buf[at : at + n], byteorder))
    if hasattr(cls, "_check"):  # the rule that stopped the strict decode, if it was a rule
        try:
            cls._check(record, offset)
        except ValidationError as exc:
            if _problem(exc) not in problems:
                problems.append(_problem(exc))
    return record, problems


def _is_magic(exc: CorruptError, rows: dict[str, _codec.FieldInfo]) -> bool:
    name = (exc.path or "").rsplit(".", 1)[-1]
    row = rows.get(name)
    return row is not None and row.contents is not None


def _row_at(cls: type[Any], exc: CorruptError, offset: int) -> tuple[str, int, int] | None:
    """(name, absolute offset, size) of the plain integer field (fixed offset, no bits) a
    rule error points at."""
    if exc.offset is None:
        return None
    rel = exc.offset - offset
    name = (exc.path or "").rsplit(".", 1)[-1]
    for row in cls.FIELDS:
        if row.name == name and row.offset == rel and row.offset is not None and row.size \
                and row.bits is None and row.contents is None:
            return row.name, offset + row.offset, row.size
    return None


def _problem(exc: CorruptError) -> str:
    return f"{exc.path}: {exc.reason}" if exc.path else exc.reason


def enum_meaning(module: ModuleType, enum: str | None, value: int) -> str | None:
    if enum is None:
        return None
    cls: type[IntEnum] | None = module.ENUMS.get(enum)
    if cls is None:
        return None
    try:
        return cls(value).name
    except ValueError:
        return f"unknown {enum} value"


def is_record(value: object) -> bool:
    return dataclasses.is_dataclass(value) and hasattr(type(value), "FIELDS")


def record_fields(record: Any, base: int, module: ModuleType, prefix: str = ""
                  ) -> tuple[list[Field], list[tuple[str, int, Any]]]:
    """Fields of a decoded record from its generated field table.

    Nested single records are flattened ("disk_geometry.cylinders"); lists of records are
    returned as (name, absolute offset, record) for the caller to make child nodes of;
    fields whose offset depends on data continue from the previous field's end.
    """
    fields: list[Field] = []
    nested: list[tuple[str, int, Any]] = []
    pos = 0
    for row in type(record).FIELDS:
        at = row.offset if row.offset is not None else pos
        value = getattr(record, row.name, None)
        name = prefix + row.name
        if isinstance(value, list) and value and is_record(value[0]):
            item_size = type(value[0]).SIZE or 0
            for i, item in enumerate(value):
                nested.append((f"{row.name}[{i}]", base + at + i * item_size, item))
            pos = at + item_size * len(value)
            continue
        if isinstance(value, array):  # bulk tables (BATs): the caller summarises them
            pos = at + (row.size or 0)
            continue
        if is_record(value):
            sub, subnested = record_fields(value, base + at, module, name + ".")
            fields += sub
            nested += subnested
            pos = at + (row.size or getattr(type(value), "SIZE", 0) or 0)
            continue
        size = row.size
        if size is None:
            size = len(value) if isinstance(value, bytes | bytearray) else 0
        fields.append(_field(row, name, base + at, size, value, module))
        pos = max(pos, at + size)
    return fields, nested


def _field(row: _codec.FieldInfo, name: str, at: int, size: int, value: Any,
           module: ModuleType) -> Field:
    meaning: str | None = None
    out: int | str | bool | None
    if isinstance(value, bytes | bytearray):
        out, meaning = bytes_value(bytes(value))
        if row.contents is not None:
            meaning = ("magic ok" if bytes(value) == row.contents
                       else f"expected {row.contents!r}, got {bytes(value)!r}")
        elif size <= 8 and (text := ascii_meaning(bytes(value))) is not None:
            meaning = text
    elif isinstance(value, str):
        out = value.split("\0", 1)[0]
        if "\0" in value and value.strip("\0") != out:
            meaning = "text after the first NUL is ignored"
    elif isinstance(value, bool):
        out = value
    elif isinstance(value, int):
        out = int(value)
        meaning = enum_meaning(module, row.enum, out)
        if meaning is None and row.enum is None and size == 4 and row.bits is None:
            tag = ascii_meaning(out.to_bytes(4, "big"))
            if tag is not None and len(tag) == 6:  # four printable characters, e.g. 'qemu'
                meaning = tag
    else:
        out = None if value is None else str(value)
    return Field(name, at, size, out, meaning, row.doc, row.bits)


def structure_node(name: str, kind: str, record: Any, base: int, size: int,
                   module: ModuleType, problems: list[str] | None = None) -> Node:
    """A node for a decoded record: its fields, and child nodes for its lists of records."""
    node = Node(name, base, size, kind)
    node.damage += problems or []
    if record is None:
        return node
    fields, nested = record_fields(record, base, module)
    node.fields = fields
    for child_name, at, item in nested:
        child = structure_node(child_name, type(item).KSY_PATH[-1], item, at,
                               type(item).SIZE or 0, module)
        node.add(child)
    return node


def checksum_verdict(cls: type[Any], record: Any, buf: bytes, offset: int, base: int,
                     covers: int | None = None) -> Verdict:
    """Stored vs computed checksum of a record at `offset` of `buf` (file offset `base`)."""
    row = next(r for r in cls.FIELDS if r.name == "checksum")
    n = covers if covers is not None else record.checksum_covers()
    algorithm: str = cls.CHECKSUM_ALGORITHM
    stored = int(record.checksum)
    if offset + n > len(buf):
        return Verdict("checksum", False, algorithm, stored, None, base + row.offset, (base, n),
                       f"cannot compute: only {len(buf) - offset} of {n} bytes are in the file")
    computed = _codec.checksum_with_zeroed(algorithm, buf, offset, n, row.offset, row.size)
    ok = computed == stored
    return Verdict("checksum", ok, algorithm, stored, computed, base + row.offset, (base, n),
                   "" if ok else f"stored {stored:#010x}, computed {computed:#010x}")


def signature_verdict(node: Node) -> Verdict | None:
    """A verdict for the structure's magic (`contents` fields), if it has one."""
    for f in node.fields:
        if f.meaning == "magic ok":
            text = bytes.fromhex(str(f.value)).decode("ascii", "replace")
            return Verdict("signature", True, offset=f.offset, detail=f"{f.name} {text!r}")
        if f.meaning is not None and f.meaning.startswith("expected b"):
            return Verdict("signature", False, offset=f.offset, detail=f"{f.name}: {f.meaning}")
    return None


def add_checks(node: Node, *verdicts: Verdict | None) -> None:
    for v in verdicts:
        if v is None:
            continue
        node.verdicts.append(v)
        if not v.ok:
            text = f"{v.name} bad: {v.detail}" if v.detail else f"{v.name} bad"
            if text not in node.damage:
                node.damage.append(text)
