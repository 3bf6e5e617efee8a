"""The construct backend (codegen/to_construct.py) as an independent oracle for the generated codecs.

`parse_fields()` reads a spec with construct objects and shares no code with the generated
codecs (no `_codec`, no Python expression translation, no struct fast path). Every test here
parses the same bytes with both and compares field by field; where one rejects the bytes the
other must reject them too.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import importlib.util
import math
import random
import struct
import subprocess
import sys
from array import array
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import construct
import pytest

from diskspec.codegen.ir import Spec
from diskspec.codegen.loader import SpecError, load_spec
from diskspec.codegen.pyrender import render_module
from diskspec.codegen.to_construct import load_structs, parse_fields, to_construct
from diskspec.formats import vhd
from diskspec.formats.errors import DiskspecError

from .conftest import FORMATS

VHD_KSY = FORMATS / "vhd.ksy"
NOISE_ROUNDS = 25


# -- helpers -------------------------------------------------------------------------------


def codec_plain(value: Any) -> Any:
    """A generated record as parse_fields() gives it: seq fields only, IntEnum -> int,
    array -> list, nested records -> dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        record: Any = type(value)
        seq = {row.name for row in record.FIELDS}
        return {f.name: codec_plain(getattr(value, f.name))
                for f in dataclasses.fields(value) if f.name in seq}
    if isinstance(value, enum.IntEnum):
        return int(value)
    if isinstance(value, array | list):
        return [codec_plain(v) for v in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def first_difference(ours: Any, theirs: Any, path: str = "") -> str | None:
    """Where two plain values differ (NaN equals NaN), or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if list(ours) != list(theirs):
            return f"{path or '/'}: fields {list(ours)} != {list(theirs)}"
        for key in ours:
            found = first_difference(ours[key], theirs[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return f"{path}: {len(ours)} items != {len(theirs)} items"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours) and math.isnan(theirs):
        return None
    if type(ours) is not type(theirs) and not (
            isinstance(ours, int) and isinstance(theirs, int)):
        return f"{path}: {type(ours).__name__} {ours!r} != {type(theirs).__name__} {theirs!r}"
    if ours != theirs:
        return f"{path}: codec {ours!r} != construct {theirs!r}"
    return None


def agree(spec: Spec, cls: Any, type_path: tuple[str, ...], data: bytes, offset: int = 0,
          **params: Any) -> bool:
    """Parse with both; assert they agree. True when the bytes were accepted."""
    try:
        ours: Any = codec_plain(cls.parse(data, offset, **params))
    except DiskspecError as exc:
        ours = exc
    try:
        theirs: Any = parse_fields(spec, type_path, data, offset, **params)
    except construct.ConstructError as exc:
        theirs = exc
    if isinstance(ours, Exception) and isinstance(theirs, Exception):
        return False
    where = f"{spec.id}:{'::'.join(type_path) or '/'}"
    assert not isinstance(ours, Exception), f"{where}: only the codec rejects: {ours!r}"
    assert not isinstance(theirs, Exception), f"{where}: only construct rejects: {theirs!r}"
    diff = first_difference(ours, theirs)
    assert diff is None, f"{where}{diff}"
    return True


@functools.cache
def spec_and_module(stem: str) -> tuple[Spec, ModuleType]:
    spec = load_spec(FORMATS / f"{stem}.ksy")
    module = importlib.import_module(f"diskspec.formats.{stem}")
    if spec.sha256 != module.SPEC_SHA256:
        pytest.fail(f"formats/{stem}.py is stale; run python -m diskspec.codegen.generate")
    return spec, module


def class_of(module: ModuleType, type_path: tuple[str, ...]) -> Any:
    return module.TYPES["::".join(type_path)]


def compile_spec(tmp_path: Path, text: str) -> tuple[Spec, ModuleType]:
    """Load a spec written here, render it with the main backend and import the module."""
    ksy = tmp_path / "spec.ksy"
    ksy.write_text(text)
    spec = load_spec(ksy)
    name = f"diskspec.formats._construct_test_{spec.id}"
    path = tmp_path / f"_construct_test_{spec.id}.py"
    path.write_text(render_module(spec))
    mod_spec = importlib.util.spec_from_file_location(name, path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return spec, module


# -- VHD: records built by the codec --------------------------------------------------------


@pytest.fixture(scope="module")
def vhd_spec() -> Spec:
    return load_spec(VHD_KSY)


def test_structs_cover_every_type(vhd_spec: Spec) -> None:
    structs = load_structs(VHD_KSY)
    assert set(structs) == set(vhd_spec.types)
    assert all(isinstance(s, construct.Construct) for s in structs.values())


def test_vhd_footer_built_by_the_codec(vhd_spec: Spec) -> None:
    footer = vhd.Footer.new(
        features=2, format_version=0x10000, data_offset=512, timestamp=0x2A3B4C5D,
        creator_application=vhd.CreatorApplication.QEMU, creator_version=0x50003,
        creator_host_os=0x1234ABCD,  # not in the enum: stays an int
        original_size=10 << 20, current_size=10 << 20,
        disk_geometry=vhd.DiskGeometry(cylinders=304, heads=4, sectors_per_track=17),
        disk_type=vhd.DiskType.DYNAMIC, unique_id=bytes(range(16)), saved_state=1,
        reserved=bytes([0xA5]) * 427,
    ).update_checksum()
    data = footer.build()
    assert vhd.Footer.verify_buffer(data)
    assert agree(vhd_spec, vhd.Footer, ("footer",), data)
    fields = parse_fields(vhd_spec, ("footer",), data)
    assert fields["creator_host_os"] == 0x1234ABCD and type(fields["creator_host_os"]) is int
    assert fields["disk_type"] == 3 and type(fields["disk_type"]) is int
    assert fields["disk_geometry"] == {"cylinders": 304, "heads": 4, "sectors_per_track": 17}
    assert fields["checksum"] == footer.checksum
    # at an offset inside a larger buffer
    assert agree(vhd_spec, vhd.Footer, ("footer",), b"\x00" * 100 + data + b"\xff" * 9, 100)
    # construct's own object: labels for known enum values, ints for unknown ones
    obj = to_construct(vhd_spec)[("footer",)].parse(data)
    assert obj.disk_type == "dynamic" and obj.creator_host_os == 0x1234ABCD
    assert to_construct(vhd_spec)[("footer",)].build(obj) == data


def test_vhd_dynamic_header_built_by_the_codec(vhd_spec: Spec) -> None:
    header = vhd.DynamicHeader.new(
        data_offset=2**64 - 1, table_offset=1536, header_version=0x10000, max_table_entries=5,
        block_size=1 << 21, parent_unique_id=bytes(range(100, 116)), parent_timestamp=777,
        parent_unicode_name="parent\u00e9.vhd",  # NUL padding is kept by `str`
        parent_locators=[vhd.ParentLocator(vhd.PlatformCode.W2KU, 512, 40, 0, 4096),
                         vhd.ParentLocator(0x11223344, 1, 2, 3, 2**63)]
        + [vhd.ParentLocator.new() for _ in range(6)],
    ).update_checksum()
    data = header.build()
    assert vhd.DynamicHeader.verify_buffer(data)
    assert agree(vhd_spec, vhd.DynamicHeader, ("dynamic_header",), data)
    fields = parse_fields(vhd_spec, ("dynamic_header",), data)
    assert fields["parent_unicode_name"].startswith("parent\u00e9.vhd\x00")
    assert len(fields["parent_unicode_name"]) == 256
    assert fields["parent_locators"][1]["platform_code"] == 0x11223344


def test_vhd_bat_with_its_param(vhd_spec: Spec) -> None:
    entries = array("I", [0xFFFFFFFF, 3, 4099, 0, 0xFFFFFFFF, 0x7FFFFFFF])
    data = vhd.Bat.new(num_entries=len(entries), entries=entries).build()
    assert agree(vhd_spec, vhd.Bat, ("bat",), data, num_entries=len(entries))
    assert parse_fields(vhd_spec, ("bat",), data, num_entries=len(entries)) == {"entries": list(entries)}
    assert agree(vhd_spec, vhd.Bat, ("bat",), data, 8, num_entries=4)
    assert not agree(vhd_spec, vhd.Bat, ("bat",), data, num_entries=len(entries) + 1)  # too short
    bat = to_construct(vhd_spec)[("bat",)]
    assert bat.parse(data, num_entries=2).entries == [0xFFFFFFFF, 3]
    assert bat.build({"entries": [1, 2]}, num_entries=2) == bytes([0, 0, 0, 1, 0, 0, 0, 2])


@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_vhd_image_made_by_qemu_img(tmp_path: Path, qemu_img: str, qemu_io: str, vhd_spec: Spec,
                                    subformat: str) -> None:
    path = tmp_path / f"{subformat}.vhd"
    subprocess.run([qemu_img, "create", "-q", "-f", "vpc", "-o", f"subformat={subformat}",
                    str(path), "24M"], check=True, capture_output=True)
    for pattern, offset in ((0x5A, 0), (0xC3, 9 << 20)):
        subprocess.run([qemu_io, "-f", "vpc", "-c", f"write -P {pattern:#x} {offset} 65536",
                        str(path)], check=True, capture_output=True)
    data = path.read_bytes()
    tail = len(data) - 512
    assert agree(vhd_spec, vhd.Footer, ("footer",), data, tail)
    assert agree(vhd_spec, vhd.Vhd, (), data)
    footer = parse_fields(vhd_spec, ("footer",), data, tail)
    assert footer["disk_type"] == (2 if subformat == "fixed" else 3)
    assert footer["creator_application"] == vhd.CreatorApplication.QEMU
    if subformat == "fixed":
        return
    assert agree(vhd_spec, vhd.Footer, ("footer",), data, 0)  # the copy at offset 0
    header_at = footer["data_offset"]
    assert agree(vhd_spec, vhd.DynamicHeader, ("dynamic_header",), data, header_at)
    header = parse_fields(vhd_spec, ("dynamic_header",), data, header_at)
    n = header["max_table_entries"]
    assert agree(vhd_spec, vhd.Bat, ("bat",), data, header["table_offset"], num_entries=n)
    bat = parse_fields(vhd_spec, ("bat",), data, header["table_offset"], num_entries=n)["entries"]
    assert len(bat) == n and sum(e != 0xFFFFFFFF for e in bat) == 2


# -- every fixed-size type of every spec --------------------------------------------------


def fixed_cases() -> list[Any]:
    """(spec, type) for every type with a fixed SIZE and no params, as the tree holds now."""
    out: list[Any] = []
    for ksy in sorted(FORMATS.glob("*.ksy")):
        try:
            spec = load_spec(ksy)
            module = importlib.import_module(f"diskspec.formats.{ksy.stem}")
        except (SpecError, ImportError) as exc:  # reported by the test, not at collection
            out.append(pytest.param(ksy.stem, None, id=f"{ksy.stem}:<{type(exc).__name__}>"))
            continue
        for path, tdef in spec.types.items():
            cls = module.TYPES.get("::".join(path))
            if not tdef.params and (cls is None or cls.SIZE is not None):
                out.append(pytest.param(ksy.stem, path, id=f"{ksy.stem}:{'::'.join(path) or '/'}"))
    return out


@functools.cache
def sample_bases() -> dict[tuple[str, tuple[str, ...]], list[bytes]]:
    """Real records of each fixed-size type from tests/samples.py (qemu-img images)."""
    import tempfile

    from .samples import all_samples

    out: dict[tuple[str, tuple[str, ...]], list[bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in all_samples(Path(tmp)):
            size = class_of(importlib.import_module(f"diskspec.formats.{sample.spec}"),
                            sample.type_path).SIZE
            if size is not None and not sample.params:
                chunk = sample.data[sample.offset:sample.offset + size]
                out.setdefault((sample.spec, sample.type_path), []).append(chunk)
    return out


def kept_spans(spec: Spec, module: ModuleType, type_path: tuple[str, ...], base: int,
               out: list[tuple[int, int]]) -> None:
    """Byte spans noise must not touch: `contents` and fields with `valid` rules, nested too."""
    attrs = {a.id: a for a in spec.types[type_path].seq}
    for row in class_of(module, type_path).FIELDS:
        if row.offset is None or row.size is None:
            continue
        a = attrs[row.name]
        if a.contents is not None or a.valid is not None:
            out.append((base + row.offset, row.size))
        elif a.kind == "struct" and a.cond is None and a.type_path is not None:
            if class_of(module, a.type_path).SIZE is None:
                continue
            count = 1 if a.repeat is None else len(getattr(class_of(module, type_path).new(), a.id))
            step = row.size // count if count else 0
            for k in range(count):
                kept_spans(spec, module, a.type_path, base + row.offset + k * step, out)


@pytest.mark.parametrize(("stem", "type_path"), fixed_cases())
def test_fixed_size_type_agrees(stem: str, type_path: tuple[str, ...] | None) -> None:
    """new() bytes, real samples, and noise everywhere except magics and ruled fields."""
    if type_path is None:
        load_spec(FORMATS / f"{stem}.ksy")  # raises the located SpecError
        importlib.import_module(f"diskspec.formats.{stem}")
        return
    spec, module = spec_and_module(stem)
    cls = class_of(module, type_path)
    assert cls.SIZE is not None, "the generated module does not match the spec"
    bases = [cls.new().build(), *sample_bases().get((spec.id, type_path), [])]
    spans: list[tuple[int, int]] = []
    kept_spans(spec, module, type_path, 0, spans)
    rng = random.Random(f"{stem}:{type_path}")
    for base in bases:
        assert len(base) == cls.SIZE
        agree(spec, cls, type_path, base)
        agree(spec, cls, type_path, b"\x5a" * 3 + base, 3)
        for _ in range(NOISE_ROUNDS):
            data = bytearray(rng.randbytes(cls.SIZE))
            for start, size in spans:
                data[start:start + size] = base[start:start + size]
            agree(spec, cls, type_path, bytes(data))
        agree(spec, cls, type_path, base[:-1])  # truncated: both reject (or both accept)


def test_real_vhd_samples_are_accepted() -> None:
    """The fixed-size test is not vacuous: the VHD records parse (they carry no rules)."""
    spec, module = spec_and_module("vhd")
    for type_path in (("footer",), ("dynamic_header",), ("parent_locator",), ("disk_geometry",)):
        for base in sample_bases()[("vhd", type_path)]:
            assert agree(spec, class_of(module, type_path), type_path, base)


def test_every_sample_agrees() -> None:
    """Each sample of tests/samples.py (any type, params included) at its real offset."""
    import tempfile

    from .samples import all_samples

    accepted = 0
    with tempfile.TemporaryDirectory() as tmp:
        for sample in all_samples(Path(tmp)):
            spec, module = spec_and_module(sample.spec)
            cls = class_of(module, sample.type_path)
            # a sample both reject is the samples' business (test_kaitai_oracle), not ours
            try:
                accepted += agree(spec, cls, sample.type_path, sample.data, sample.offset,
                                  **sample.params)
            except AssertionError as exc:
                raise AssertionError(f"sample {sample.id}: {exc}") from None
    assert accepted >= 10


# -- specs written here: features the disk formats do not use (yet) ----------------------

MISC = """
meta:
  id: misc
  endian: be
  encoding: UTF-8
seq:
  - id: magic
    contents: [0x53, 0x59, 0x4e]
  - id: version
    type: u1
    valid:
      min: 1
      max: 3
  - id: flags
    type: b3
  - id: kind
    type: b5
    enum: kind
  - id: count
    type: u2le
  - id: items
    type: item(_index, count)
    repeat: expr
    repeat-expr: count
  - id: name
    type: strz
    size: 8
  - id: name16
    type: str
    size: 6
    encoding: UTF-16LE
  - id: name16z
    type: strz
    size: 6
    encoding: UTF-16BE
  - id: extra
    type: u4
    if: version >= 2
  - id: blob_len
    type: u1
  - id: blob
    type: sized
    size: blob_len
  - id: s_val
    type: s2
  - id: f_val
    type: f4le
  - id: kinds
    type: u1
    enum: kind
    repeat: expr
    repeat-expr: 2
  - id: odd
    type: u1
    valid:
      any-of: [1, 3, 5, 7]
  - id: even
    type: u1
    valid:
      expr: _ % 2 == 0
  - id: fixed
    type: u1
    valid: 0x42
  - id: tail
    type: u2
    repeat: eos
types:
  item:
    params:
      - id: idx
        type: u4
      - id: total
        type: u2
    seq:
      - id: tag
        type: u1
        enum: kind
      - id: value
        type: u2
        valid:
          expr: _ >= idx
      - id: extra
        type: u1
        if: _parent.version == 3 and idx + 1 < total
  sized:
    seq:
      - id: first
        type: u1
      - id: mid
        size: (_io.size - _io.pos) / 2
      - id: more
        type: u1
        if: _root.version > 1 and _root.kind == kind::one
      - id: rest
        size-eos: true
enums:
  kind:
    0: zero
    1: one
    7: seven
"""


def misc_bytes(version: int = 3, kind: int = 1, count: int = 2, tail: bytes = bytes(range(10)),
               odd: int = 5, name16z: bytes = b"\x00q\x00\x00\xd8\x00") -> bytes:
    out = bytearray(b"SYN") + bytes([version, (5 << 5) | kind]) + struct.pack("<H", count)
    for i in range(count):
        out += bytes([7 if i % 2 else 9]) + struct.pack(">H", 100 + i)
        if version == 3 and i + 1 < count:
            out += b"\xee"
    out += b"ab\x00cd\x00\x00\x00" + "x\x00y".encode("utf-16le") + name16z
    if version >= 2:
        out += struct.pack(">I", 0xDEADBEEF)
    out += bytes([7, 1, 2, 3, 4, 5, 6, 7])
    out += struct.pack(">h", -5) + struct.pack("<f", 1.5) + bytes([7, 200, odd, 4, 0x42])
    return bytes(out + tail)


@pytest.mark.parametrize("variant", [
    {}, {"version": 1, "kind": 7}, {"version": 2, "count": 0}, {"count": 5, "tail": b""},
    {"name16z": b"\x00a\x00b\x00c"},  # no terminator
    {"odd": 4}, {"version": 0}, {"version": 4},  # rejected by both
])
def test_misc_features(tmp_path: Path, variant: dict[str, Any]) -> None:
    spec, module = compile_spec(tmp_path, MISC)
    data = misc_bytes(**variant)
    accepted = agree(spec, module.Misc, (), data)
    assert accepted == (variant.get("odd", 5) == 5 and 1 <= variant.get("version", 3) <= 3)
    if accepted and not variant:
        fields = parse_fields(spec, (), data)
        assert fields["items"][0] == {"tag": 9, "value": 100, "extra": 0xEE}
        assert fields["name16"] == "x\x00y" and fields["name16z"] == "q"
        assert fields["blob"] == {"first": 1, "mid": b"\x02\x03\x04", "more": 5, "rest": b"\x06\x07"}


CONTEXT = """
meta:
  id: context
  endian: le
  bit-endian: le
seq:
  - id: sig
    size: 2
    valid: '[0x4d, 0x5a]'
  - id: mode
    type: b3
    enum: mode
  - id: level
    type: b5
  - id: vals
    type: u2
    repeat: expr
    repeat-expr: 3
    valid:
      max: 1000
  - id: wname
    type: strz
    size: 8
    encoding: UTF-16LE
  - id: chunk
    type: chunk(level > 3, sig)
    size: 12
  - id: rest
    type: tailer
    size-eos: true
instances:
  total:
    value: _io.size
enums:
  mode:
    0: a
    1: b
    2: c
types:
  chunk:
    params:
      - id: big
        type: bool
      - id: tag
        type: bytes
    seq:
      - id: n
        type: u1
      - id: peek_ok
        type: u1
        if: peek_at_end == 0xee and tag == [0x4d, 0x5a]
      - id: wide
        type: u4
        if: big
      - id: narrow
        type: u2
        if: not big
      - id: depth
        type: u1
        if: _parent.level == _root.level
      - id: room
        size: _io.size - _io.pos - 1
    instances:
      peek_at_end:
        pos: _io.size - 1
        type: u1
  tailer:
    seq:
      - id: items
        type: item
        repeat: eos
  item:
    seq:
      - id: len
        type: u1
      - id: body
        size: len
      - id: total_seen
        type: u1
        if: _root.total > 20
"""


def context_bytes(mode: int = 2, level: int = 5, wname: bytes = "hi".encode("utf-16le"),
                  items: tuple[bytes, ...] = (b"abc",), end: int = 0xEE) -> bytes:
    out = bytearray(b"MZ") + bytes([mode | (level << 3)]) + struct.pack("<3H", 1, 2, 999)
    out += (wname + b"\x00\x00").ljust(8, b"\x00")[:8]
    body = bytes([7, 1]) + (struct.pack("<I", 0xABCDEF) if level > 3 else struct.pack("<H", 0xAB))
    out += (body + b"\x09").ljust(11, b"\x55") + bytes([end])
    for item in items:
        out += bytes([len(item)]) + item + b"\x42"
    return bytes(out)


@pytest.mark.parametrize("variant", [
    {}, {"level": 2, "end": 0x11}, {"mode": 1}, {"wname": "a".encode("utf-16le") + b"\x00\x00zz"},
    {"items": (b"abc", b"", b"\xff" * 9)}, {"items": ()},
])
def test_context_features(tmp_path: Path, variant: dict[str, Any]) -> None:
    """params (bool, bytes), substreams, _io, _parent, _root, instances read by expressions."""
    spec, module = compile_spec(tmp_path, CONTEXT)
    assert agree(spec, module.Context, (), context_bytes(**variant))
    broken = context_bytes(**variant) + b"\x30"  # an item whose body runs off the end
    assert not agree(spec, module.Context, (), broken)


BITS = """
meta:
  id: bits
  endian: {endian}
  bit-endian: {bit_endian}
seq:
  - id: a
    type: b3
  - id: b
    type: b13
    enum: e
  - id: c
    type: b5
  - id: d
    type: b19
  - id: e
    type: u2
  - id: f
    type: b1
  - id: g
    type: b23
  - id: tail
    size-eos: true
enums:
  e:
    0x1234: x
"""


@pytest.mark.parametrize(("endian", "bit_endian"), [("be", "be"), ("le", "le"), ("le", "be"), ("be", "le")])
@pytest.mark.parametrize("seed", range(5))
def test_bit_groups(tmp_path: Path, endian: str, bit_endian: str, seed: int) -> None:
    spec, module = compile_spec(tmp_path, BITS.format(endian=endian, bit_endian=bit_endian))
    data = random.Random(seed).randbytes(12)
    assert agree(spec, module.Bits, (), data)
    fields = parse_fields(spec, (), data)
    word = int.from_bytes(data[:2], "big" if bit_endian == "be" else "little")
    assert fields["a"] == (word >> 13 if bit_endian == "be" else word & 7)


FLAT_BITS = """
meta:
  id: flat_bits
  endian: {endian}
  bit-endian: {bit_endian}
seq:
  - id: a
    type: b4
  - id: b
    type: b12
  - id: c
    type: u2
"""


@pytest.mark.parametrize(("endian", "bit_endian"), [("be", "be"), ("le", "le"), ("le", "be"),
                                                    ("be", "le")])
def test_flat_bit_group_uses_the_bit_order(tmp_path: Path, endian: str, bit_endian: str) -> None:
    spec, module = compile_spec(tmp_path, FLAT_BITS.format(endian=endian, bit_endian=bit_endian))
    data = bytes([0x12, 0x34, 0x56, 0x78])
    expected_a = 0x1 if bit_endian == "be" else 0x2
    assert parse_fields(spec, (), data)["a"] == expected_a  # Kaitai: bits in stream order
    assert agree(spec, module.FlatBits, (), data)


# -- edge cases where the main backend once disagreed with construct and Kaitai --------------
# Each expected value is what the official Kaitai compiler's code does too (checked by hand
# with tools/ksc.js).

PYRENDER_BUGS: dict[str, tuple[str, bytes, type[BaseException]]] = {
    "if_on_io_pos_in_a_run": ("""
meta: {id: b1, endian: be}
seq:
  - {id: a, type: u1, if: _io.pos < 2}
  - {id: b, type: u1, if: _io.pos < 2}
  - {id: c, type: u1, if: _io.pos < 2}
  - {id: d, type: u1}
""", bytes([1, 2, 3, 4]), AssertionError),
    "repeat_eos_int_partial_item": ("""
meta: {id: b2, endian: be}
seq:
  - {id: n, type: u2, repeat: eos}
""", bytes([0, 1, 0, 2, 9]), AssertionError),
    "float_division": ("""
meta: {id: b3, endian: le}
seq:
  - {id: n, type: u1}
  - {id: x, type: u1, if: (n + 0.0) / 4.0 > 1.2}
""", bytes([5, 9]), AssertionError),
    "parent_of_parent": ("""
meta: {id: b4, endian: le}
seq:
  - {id: a, type: u1}
  - {id: mid, type: middle}
types:
  middle:
    seq:
      - {id: inner, type: leaf}
  leaf:
    seq:
      - {id: x, type: u1, if: _parent._parent.a == 1}
""", bytes([1, 5]), AttributeError),
    "value_instance_reads_io_pos": ("""
meta: {id: b5, endian: le}
seq:
  - {id: a, type: u1}
  - {id: rest, size: left}
instances:
  left: {value: _io.size - _io.pos}
""", bytes([1, 2, 3]), NameError),
    "valid_on_bits_outside_the_fast_path": ("""
meta: {id: b6, endian: le}
seq:
  - {id: a, type: b4, valid: {max: 3}}
  - {id: b, type: b4}
  - {id: rest, size-eos: true}
""", bytes([0xF0, 1]), AssertionError),
    "bits_pos_instance": ("""
meta: {id: b7, endian: be}
seq:
  - {id: a, type: u1}
  - {id: b, type: u1, if: low12 == 0x201}
instances:
  low12: {pos: 0, type: b12le}
""", bytes([0x01, 0x02]), AttributeError),  # render_module() itself fails
}


@pytest.mark.parametrize("name", sorted(PYRENDER_BUGS))
def test_edge_cases_agree(tmp_path: Path, name: str) -> None:
    text, data, _ = PYRENDER_BUGS[name]
    spec, module = compile_spec(tmp_path, text)
    both_reject = {"repeat_eos_int_partial_item", "valid_on_bits_outside_the_fast_path"}
    assert agree(spec, module.TYPES[""], (), data) is (name not in both_reject)


def test_construct_reading_matches_kaitai_where_pyrender_does_not(tmp_path: Path) -> None:
    """The construct side of the pinned cases, asserted on its own."""
    expect: dict[str, Callable[[Spec, bytes], None]] = {
        "if_on_io_pos_in_a_run":
            lambda s, d: _eq(parse_fields(s, (), d), {"a": 1, "b": 2, "c": None, "d": 3}),
        "repeat_eos_int_partial_item": lambda s, d: _raises(s, d),
        "float_division": lambda s, d: _eq(parse_fields(s, (), d), {"n": 5, "x": 9}),
        "parent_of_parent":
            lambda s, d: _eq(parse_fields(s, (), d), {"a": 1, "mid": {"inner": {"x": 5}}}),
        "value_instance_reads_io_pos":
            lambda s, d: _eq(parse_fields(s, (), d), {"a": 1, "rest": b"\x02\x03"}),
        "valid_on_bits_outside_the_fast_path": lambda s, d: _raises(s, d),
        "bits_pos_instance": lambda s, d: _eq(parse_fields(s, (), d), {"a": 1, "b": 2}),
    }
    for name, (text, data, _) in PYRENDER_BUGS.items():
        ksy = tmp_path / f"{name}.ksy"
        ksy.write_text(text)
        expect[name](load_spec(ksy), data)


def _eq(got: Any, want: Any) -> None:
    assert got == want


def _raises(spec: Spec, data: bytes) -> None:
    with pytest.raises(construct.ConstructError):
        parse_fields(spec, (), data)


def test_bad_expression_is_a_located_error(tmp_path: Path) -> None:
    ksy = tmp_path / "bad.ksy"
    ksy.write_text("meta: {id: bad, endian: le}\nseq:\n  - id: a\n    type: u1\n"
                   "    valid: {expr: _ < phantom}\n")
    with pytest.raises(SpecError, match=r"bad\.ksy:3: /seq/a: .*phantom"):
        load_structs(ksy)


def test_load_structs_by_name_from_the_installed_package(tmp_path: Path) -> None:
    """The README's example, run from a directory that is no checkout."""
    code = ("from diskspec.codegen.to_construct import load_structs\n"
            "from diskspec.formats import vhd\n"
            "s = load_structs('vhd')\n"
            "raw = vhd.Footer.new(current_size=1 << 20).update_checksum().build()\n"
            "print(s[('footer',)].parse(raw).current_size)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(1 << 20)


@pytest.mark.parametrize("case", ["unknown", "no_construct"])
def test_load_structs_errors_are_one_line(tmp_path: Path, case: str) -> None:
    code = {"unknown": "from diskspec.codegen.to_construct import load_structs\nload_structs('vhdz')\n",
            "no_construct": "import sys\nsys.modules['construct'] = None\n"
                            "import diskspec.codegen.to_construct\n"}[case]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    # one exception, no chained "During handling of the above exception" traceback
    assert "During handling" not in proc.stderr and "direct cause" not in proc.stderr
    if case == "unknown":
        assert last.startswith("diskspec.codegen.loader.SpecError: unknown spec 'vhdz'") and "vhdx" in last
    else:
        assert last == ("ModuleNotFoundError: diskspec.codegen.to_construct needs the construct "
                        "package: pip install 'diskspec[construct]'")
