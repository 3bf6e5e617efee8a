"""Generated codecs: round-trips for every type of every spec, checksums, bad bytes."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import random
import re
import tempfile
from array import array
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskspec.formats import _codec, vhd
from diskspec.formats.errors import CorruptError, TruncatedError, ValidationError

from .conftest import FORMATS
from .samples import all_samples


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"diskspec.formats.{p.stem}") for p in sorted(FORMATS.glob("*.ksy"))]


def fixed_types() -> list[tuple[str, type]]:
    out = []
    for mod in modules():
        for path, cls in mod.TYPES.items():
            if cls.SIZE and "params" not in cls.parse.__code__.co_varnames[:3] and \
                    cls.parse.__code__.co_kwonlyargcount == 0:
                out.append((f"{mod.SPEC_ID}:{path}", cls))
    return out


FIXED = fixed_types()


def sample_bases() -> dict[tuple[str, tuple[str, ...]], bytes]:
    """The first real sample of each fixed-size type (tests/samples.py)."""
    out: dict[tuple[str, tuple[str, ...]], bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in all_samples(Path(tmp)):
            mod = importlib.import_module(f"diskspec.formats.{sample.spec}")
            size = mod.TYPES["::".join(sample.type_path)].SIZE
            if size and not sample.params:
                key = (sample.spec, sample.type_path)
                out.setdefault(key, sample.data[sample.offset : sample.offset + size])
    return out


SAMPLE_BASES = sample_bases()


def with_magics(cls: Any, raw: bytes) -> bytes:
    """Random bytes with every `contents` field (at any nesting) set to its magic."""
    buf = bytearray(raw)

    def stamp(c: Any, base: int) -> None:
        for f in c.FIELDS:
            if f.offset is None:
                continue
            if f.contents is not None:
                buf[base + f.offset : base + f.offset + len(f.contents)] = f.contents
        defaults = c.new()
        for f in c.FIELDS:
            value = getattr(defaults, f.name, None)
            if f.offset is not None and dataclasses.is_dataclass(value):
                stamp(type(value), base + f.offset)
            elif f.offset is not None and isinstance(value, list) and value and \
                    dataclasses.is_dataclass(value[0]):
                item: Any = type(value[0])  # a generated record class
                for k in range(len(value)):
                    stamp(item, base + f.offset + k * item.SIZE)

    stamp(cls, 0)
    return bytes(buf)


def test_every_spec_has_fixed_types() -> None:
    assert {name.split(":")[0] for name, _ in FIXED} >= {"vhd"}


def has_rules(cls: Any) -> bool:
    """True when some field (or nested record) of `cls` carries a `valid` rule."""
    if any(f.rule for f in cls.FIELDS):
        return True
    defaults = cls.new()
    for f in cls.FIELDS:
        value = getattr(defaults, f.name, None)
        if isinstance(value, list) and value:
            value = value[0]
        if dataclasses.is_dataclass(value) and has_rules(type(value)):
            return True
    return False


def frozen_spans(cls: Any) -> list[tuple[int, int]]:
    """Byte spans random data must not touch: magics, ruled fields, the fields a rule reads,
    records that hold rules."""
    defaults = cls.new()
    read_by_rules = {word for f in cls.FIELDS if f.rule
                     for word in re.findall(r"[a-z_][a-z0-9_]*", f.rule)}
    spans = []
    for f in cls.FIELDS:
        value = getattr(defaults, f.name, None)
        inner = value[0] if isinstance(value, list) and value else value
        nested_rules = dataclasses.is_dataclass(inner) and has_rules(type(inner))
        frozen = f.rule or f.contents or nested_rules or f.name in read_by_rules
        if f.offset is not None and f.size and frozen:
            spans.append((f.offset, f.offset + f.size))
    return spans


@pytest.mark.parametrize(("name", "cls"), FIXED, ids=[n for n, _ in FIXED])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64), fill=st.sampled_from([None, 0x00, 0xFF, 0x80]))
def test_bytes_round_trip(name: str, cls: Any, seed: int, fill: int | None) -> None:
    """build(parse(b)) == b for valid buffers, reserved bytes included; and parse(build(x)) == x.

    Random bytes go everywhere except where the spec states a rule: there the bytes come
    from a real sample (tests/samples.py), so every example is a valid record.
    """
    noise = random.Random(seed).randbytes(cls.SIZE) if fill is None else bytes([fill]) * cls.SIZE
    raw = bytearray(with_magics(cls, noise))
    if has_rules(cls):
        base = SAMPLE_BASES.get((name.split(":")[0], tuple(filter(None, name.split(":")[1].split("::")))))
        assert base is not None, f"{name} has valid rules: add a sample of it to tests/samples.py"
        for start, end in frozen_spans(cls):
            raw[start:end] = base[start:end]
    data = bytes(raw)
    obj = cls.parse(data)
    assert obj.build() == data
    assert cls.parse(obj.build()) == obj
    assert cls.parse(b"\xee" * 7 + data, 7) == obj


@pytest.mark.parametrize(("name", "cls"), FIXED, ids=[n for n, _ in FIXED])
def test_new_round_trips_and_truncation_is_an_error(name: str, cls: Any) -> None:
    raw = cls.new().build()
    assert len(raw) == cls.SIZE
    with pytest.raises(TruncatedError) as info:
        cls.parse(raw[:-1])
    assert info.value.path and info.value.offset is not None
    try:
        again = cls.parse(raw)
    except ValidationError as exc:  # new() promises the magics, not every `valid` rule
        assert has_rules(cls), exc
        return
    assert again.build() == raw


def test_vhd_footer_from_qemu_verifies_and_every_flip_fails(make_image: Any) -> None:
    for options in ("subformat=fixed", "subformat=dynamic"):
        path: Path = make_image("vpc", "10M", options)
        data = path.read_bytes()
        at = len(data) - 512
        footer = vhd.Footer.parse(data, at)
        assert vhd.Footer.verify_buffer(data, at) and footer.verify_checksum()
        assert footer.build() == data[at:]
        for i in range(512):
            flipped = bytearray(data[at:])
            flipped[i] ^= 0x01
            assert not vhd.Footer.verify_buffer(bytes(flipped)), f"flip at byte {i} not caught"


def test_vhd_dynamic_header_checksum_and_sheet_test_vector() -> None:
    footer = vhd.Footer.new(
        features=2, format_version=0x00010000, data_offset=0xFFFFFFFFFFFFFFFF, timestamp=0,
        creator_application=vhd.CreatorApplication.QEMU, creator_version=0x00050003,
        creator_host_os=vhd.CreatorHostOs.WINDOWS, original_size=10514432,
        current_size=10514432, disk_geometry=vhd.DiskGeometry(302, 4, 17),
        disk_type=vhd.DiskType.FIXED).update_checksum()
    assert footer.checksum == 0xFFFFEF24  # vhd.md 2.3
    footer.disk_type, footer.data_offset = vhd.DiskType.DYNAMIC, 512
    assert footer.update_checksum().checksum == 0xFFFFF719
    header = vhd.DynamicHeader.new(data_offset=0xFFFFFFFFFFFFFFFF, table_offset=1536,
                                   header_version=0x00010000, max_table_entries=6,
                                   block_size=0x200000, parent_unicode_name="\0" * 256)
    assert header.update_checksum().checksum == 0xFFFFF471  # vhd.md 5
    assert vhd.DynamicHeader.verify_buffer(header.build())


def test_wrong_magic_names_the_field() -> None:
    raw = bytearray(vhd.Footer.new().build())
    raw[0:8] = b"conectiX"
    with pytest.raises(ValidationError) as info:
        vhd.Footer.parse(bytes(raw))
    assert info.value.path == "footer.cookie" and info.value.offset == 0
    with pytest.raises(ValidationError) as info2:
        vhd.DynamicHeader.parse(bytes(1024), 0)
    assert info2.value.path == "dynamic_header.cookie"
    assert isinstance(info2.value, CorruptError)


def test_truncated_table_and_negative_offset() -> None:
    with pytest.raises(TruncatedError) as info:
        vhd.Bat.parse(bytes(40), 0, num_entries=11)
    assert info.value.path == "bat.entries"
    with pytest.raises(TruncatedError):
        vhd.Footer.parse(bytes(1024), -1)


def test_unknown_enum_values_are_kept() -> None:
    footer = vhd.Footer.new(disk_type=9, creator_application=0x41424344)
    again = vhd.Footer.parse(footer.build())
    assert again.disk_type == 9 and not isinstance(again.disk_type, vhd.DiskType)
    assert again.creator_application == 0x41424344
    assert vhd.Footer.parse(vhd.Footer.new(disk_type=3).build()).disk_type is vhd.DiskType.DYNAMIC


def test_build_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(_codec.BuildError):
        vhd.Footer.new(features=1 << 32).build()
    with pytest.raises(_codec.BuildError):
        vhd.Footer.new(unique_id=b"short").build()
    with pytest.raises(TypeError):
        vhd.Footer.new(no_such_field=1)


def test_bulk_table_decode_two_million_entries() -> None:
    n = 2_000_000
    ref = array("I", range(n))
    ref.byteswap()  # big-endian on disk
    bat = vhd.Bat.parse(ref.tobytes(), 0, num_entries=n)
    assert isinstance(bat.entries, array) and len(bat.entries) == n
    assert bat.entries[0] == 0 and bat.entries[123456] == 123456 and bat.entries[-1] == n - 1
    assert bat.build() == ref.tobytes()


def test_field_tables_describe_the_layout() -> None:
    rows = {f.name: f for f in vhd.Footer.FIELDS}
    assert (rows["cookie"].offset, rows["cookie"].size, rows["cookie"].contents) == (0, 8, b"conectix")
    assert (rows["checksum"].offset, rows["unique_id"].offset, rows["reserved"].size) == (64, 68, 427)
    assert rows["disk_type"].enum == "disk_type"
    assert rows["timestamp"].orig_id == "Time Stamp"
    sizes = [f.size for f in vhd.Footer.FIELDS if f.size is not None]
    assert len(sizes) == len(vhd.Footer.FIELDS) and sum(sizes) == vhd.Footer.SIZE


def test_vhdx_headers_from_qemu_verify_and_every_flip_fails(make_image: Any) -> None:
    from diskspec.formats import vhdx

    data = make_image("vhdx", "64M").read_bytes()
    headers = [vhdx.Header.parse(data, at) for at in (64 * 1024, 128 * 1024)]
    assert all(h.verify_checksum() for h in headers)
    assert headers[0].sequence_number != headers[1].sequence_number
    for at in (64 * 1024, 128 * 1024):
        assert vhdx.Header.verify_buffer(data, at)
        block = bytearray(data[at : at + 4096])
        for i in range(4096):
            block[i] ^= 0x80
            assert not vhdx.Header.verify_buffer(bytes(block)), f"flip at byte {i} not caught"
            block[i] ^= 0x80
    for at in (192 * 1024, 256 * 1024):  # region tables: CRC over the whole 64 KiB
        assert vhdx.RegionTable.verify_buffer(data, at)
        corrupt = bytearray(data)
        corrupt[at + 60000] ^= 1
        assert not vhdx.RegionTable.verify_buffer(bytes(corrupt), at)


@pytest.mark.parametrize("found", [True, False])
def test_crc32c_extension_loaded_alone_or_through_the_package(found: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The check value of the CRC-32C catalogue, by either way of loading the C function."""
    import importlib.util

    if not found:  # an unknown package layout: the package is imported as usual
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    fn = _codec._crc32c_function.__wrapped__()
    assert fn(b"123456789") == 0xE3069283
    assert fn(bytes(4096)) == _codec.crc32c(bytes(4096))
    if found:
        assert fn.__module__ == "crc32c._crc32c"


ALL_TYPES = [(f"{mod.SPEC_ID}:{path}", cls) for mod in modules() for path, cls in mod.TYPES.items()]


@pytest.mark.parametrize(("name", "cls"), ALL_TYPES, ids=[n for n, _ in ALL_TYPES])
def test_written_out_methods_are_what_dataclass_makes(name: str, cls: Any) -> None:
    """Codegen writes __init__, and __repr__ and __eq__ come from _codec.Record (dataclass
    would compile all three at import time); dataclass's own field table says what each
    must do."""
    fields = dataclasses.fields(cls)
    public = [f.name for f in fields if f.init]
    # a bool first: asserting is_dataclass(cls) itself would narrow `cls` to DataclassInstance
    slotted_dataclass = dataclasses.is_dataclass(cls) and "__dict__" not in dir(cls)
    assert slotted_dataclass
    assert list(inspect.signature(cls).parameters) == public
    assert cls.__match_args__ == tuple(public)
    assert cls.__hash__ is None  # mutable with ==, as dataclass leaves it

    rec = cls.new()
    for f in fields:
        if not f.init:
            assert getattr(rec, f.name) == f.default  # set by __init__ like dataclass's
    shown = ", ".join(f"{f.name}={getattr(rec, f.name)!r}" for f in fields if f.repr)
    assert repr(rec) == f"{cls.__qualname__}({shown})"

    twin = dataclasses.replace(rec)
    assert twin == rec and twin is not rec
    assert rec != object() and rec.__eq__(object()) is NotImplemented
    for f in fields:
        other = dataclasses.replace(rec)
        setattr(other, f.name, _Unequal())
        assert (other == rec) is (not f.compare), f.name


class _Unequal:
    """A value equal to nothing, itself included."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


def test_new_gives_the_values_the_spec_fixes_as_qemu_writes_them(make_image: Any) -> None:
    """Fields with a `-default` (a constant the spec documents) or a `valid` value get it in
    new(); the oracle is the footer and dynamic header qemu-img writes."""
    data = make_image("vpc", "10M", "subformat=dynamic").read_bytes()
    qemu_footer = vhd.Footer.parse(data, len(data) - 512)
    qemu_header = vhd.DynamicHeader.parse(data, qemu_footer.data_offset)
    footer, header = vhd.Footer.new(), vhd.DynamicHeader.new()
    assert footer.format_version == qemu_footer.format_version == 0x00010000
    assert footer.features == qemu_footer.features == 2
    assert header.header_version == qemu_header.header_version == 0x00010000
    assert header.data_offset == qemu_header.data_offset == (1 << 64) - 1
    assert vhd.Footer.new(format_version=7).format_version == 7  # still overridable
    from diskspec.formats import vhdx
    assert vhdx.Header.new().version == 1  # valid: 1


def test_default_key_is_checked(tmp_path: Path) -> None:
    from diskspec.codegen import SpecError, load_spec
    spec = tmp_path / "d.ksy"
    for bad, message in (("        -default: abc\n", "must be a constant integer"),
                         ("        -default: 1\n        repeat: expr\n        repeat-expr: 2\n",
                          "only for a single integer field")):
        spec.write_text("meta:\n  id: d\n  endian: le\nseq:\n  - id: x\n        type: u4\n"
                        .replace("        type", "    type") + bad.replace("        ", "    "))
        with pytest.raises(SpecError, match=message):
            load_spec(spec)
    spec.write_text("meta:\n  id: d\n  endian: le\nseq:\n  - id: x\n    type: u4\n    -default: 0x10\n"
                    "  - id: y\n    type: u2\n    valid:\n      any-of: [5, 6]\n")
    import importlib.util
    import sys

    from diskspec.codegen import generate
    module_path = spec.with_suffix(".py")
    module_path.write_text(generate(spec))
    loader_spec = importlib.util.spec_from_file_location("diskspec.formats._test_default", module_path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[loader_spec.name] = module
    try:
        loader_spec.loader.exec_module(module)
    finally:
        del sys.modules[loader_spec.name]
    made = module.D.new()
    assert (made.x, made.y) == (0x10, 5)
