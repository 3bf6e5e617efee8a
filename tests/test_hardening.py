"""Hostile and damaged images (issue 14, items 3, 6 and 7): every failure is one of the
project's errors, printed as one line that names the file, and output never raises on what
an image holds.

The inputs are built with the codecs and the engine tests' helpers: an odd-length UTF-16
parent-locator value, lone surrogates in a locator value and in a VHD parent name, a VHDX BAT
entry pointing at or past 2^63, VHDX files cut short behind a valid identifier, and images
whose damage is found at open (a VHD footer checksum, a VHDX region outside the file).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.formats import _codec, vhdx
from diskspec.runtime.cli import main as cli
from diskspec.runtime.engines.vhdx.engine import VhdxEngine
from diskspec.runtime.errors import CorruptError, ReadOnlyError, TruncatedError
from diskspec.runtime.registry import probe

from . import samples
from .test_cli import ds_run
from .test_vhd_engine import footer_of, patch_header
from .test_vhd_engine import poke as poke_end
from .test_vhdx_engine import (
    BAT_GUID,
    FULLY_PRESENT,
    PARENT_LOCATOR,
    bat_entry_at,
    metadata_item,
    patch_item,
    poke,
    put_region_table,
    region_table,
)

KiB = 1 << 10
MiB = 1 << 20


def strict_run(*args: str | Path) -> tuple[int, str, str]:
    """Like ds_run, with a standard output that encodes strictly (as a UTF-8 terminal or
    pipe does), where a lone surrogate cannot be written as it is."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    errs = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
        code = cli.main([str(a) for a in args])
    out.flush()
    return code, raw.getvalue().decode("utf-8"), errs.getvalue()


def one_error_line(stderr: str, *names: str) -> str:
    """The single `diskspec: ...` line a failed command prints, with each of `names` in it."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("diskspec: "), stderr
    assert "Traceback" not in stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def vhdx_child(tmp_path: Path) -> Path:
    """A differencing VHDX (1 MiB blocks) over a dynamic parent beside it."""
    parent, child = tmp_path / "parent.vhdx", tmp_path / "child.vhdx"
    with ds.create(parent, "vhdx", 4 * MiB, block_size=MiB) as image:
        image.write(b"p" * MiB)
    with ds.create(child, "vhdx", None, subformat="differencing", parent=parent,
                   block_size=MiB) as image:
        image.write(b"c" * 4096)
    return child


@pytest.fixture
def vhdx_dynamic(tmp_path: Path) -> Path:
    """A dynamic VHDX of 4 MiB, 1 MiB blocks, blocks 0-2 written."""
    path = tmp_path / "dyn.vhdx"
    with ds.create(path, "vhdx", 4 * MiB, block_size=MiB) as image:
        image.write(bytes(range(256)) * (3 * MiB // 256))
    return path


# -- 3a. strings the codecs cannot decode ---------------------------------------------------


def test_codec_string_decoding_raises_corrupt_error() -> None:
    with pytest.raises(CorruptError, match=r"^name at offset 0x10: 3 bytes are not UTF-16LE"):
        _codec.decode_str(b"ab\0", "UTF-16LE", "name", 0x10)
    with pytest.raises(CorruptError, match="name"):
        _codec.decode_strz(b"abc", "UTF-16BE", "name")
    raw = bytearray(samples.vhdx_parent_locator([("relative_path", "parent.vhdx")]))
    entry = vhdx.ParentLocatorEntry.parse(raw, 20)
    entry.value_length -= 1
    raw[20:32] = entry.build()
    (parsed,) = vhdx.ParentLocator.parse(bytes(raw)).entries
    assert parsed.key == "relative_path"
    with pytest.raises(CorruptError, match="parent_locator_entry.value"):
        _ = parsed.value


def test_odd_length_locator_value_is_corrupt(vhdx_child: Path) -> None:
    at, raw = metadata_item(vhdx_child, PARENT_LOCATOR)
    entry = vhdx.ParentLocatorEntry.parse(raw, 20)
    entry.value_length -= 1  # odd: half a UTF-16 code unit at the end
    poke(vhdx_child, at + 20, entry.build())
    with pytest.raises(CorruptError, match="parent_locator_entry.value"):
        ds.open(vhdx_child)
    for command in ("info", "check", "map"):
        code, _, errs = ds_run(command, vhdx_child)
        assert code == 1, (command, errs)
        one_error_line(errs, str(vhdx_child), "parent_locator_entry.value", "UTF-16LE")
    code, out, errs = ds_run("dissect", vhdx_child)
    assert "Traceback" not in errs
    assert "bad key or value: parent_locator_entry.value" in out + errs


# -- 3b. lone surrogates in names -------------------------------------------------------------


def test_surrogate_in_a_vhdx_locator_is_printed_escaped(vhdx_child: Path) -> None:
    with ds.open(vhdx_child) as image:
        assert isinstance(image.engine, VhdxEngine)
        locator = dict(image.engine.locator)
    name = "absolute_win32_path"
    locator[name] = locator[name][:-1] + "\ud800"  # same length: the item keeps its size
    patch_item(vhdx_child, PARENT_LOCATOR, samples.vhdx_parent_locator(list(locator.items())))
    with ds.open(vhdx_child) as image:
        assert isinstance(image.engine, VhdxEngine)
        assert image.engine.locator[name].endswith("\ud800")
    for command in ("info", "dissect"):
        code, out, errs = strict_run(command, vhdx_child)
        assert code == 0, (command, errs)
        assert "\\ud800" in out, command


def test_surrogate_in_a_vhd_parent_name_is_printed_escaped(tmp_path: Path) -> None:
    parent, child = tmp_path / "parent.vhd", tmp_path / "child.vhd"
    with ds.create(parent, "vpc", 4 * MiB) as image:
        image.write(b"p" * 4096)
    with ds.create(child, "vpc", None, subformat="differencing", parent=parent) as image:
        image.write(b"c" * 512)
    patch_header(child, parent_unicode_name="par\udc80ent.vhd".ljust(256, "\0"))
    for command in ("info", "dissect"):
        code, out, errs = strict_run(command, child)
        assert code == 0, (command, errs)
        assert "par\\udc80ent.vhd" in out, command


# -- 3c. BAT offsets no file can have ---------------------------------------------------------


@pytest.mark.parametrize("offset", [1 << 63, (1 << 64) - MiB])
def test_bat_offset_beyond_any_file_is_corrupt(vhdx_dynamic: Path, tmp_path: Path,
                                               offset: int) -> None:
    with ds.open(vhdx_dynamic) as image:
        content = image.read()
    # the BAT has no checksum to fix up
    poke(vhdx_dynamic, bat_entry_at(vhdx_dynamic, 1), (offset | FULLY_PRESENT).to_bytes(8, "little"))
    with ds.open(vhdx_dynamic) as image:
        assert image.pread(0, MiB) == content[:MiB]  # block 0 still reads
        for read in (lambda: image.pread(MiB + 5, 100),
                     lambda: image.read_at(MiB, memoryview(bytearray(4096))),
                     lambda: list(image.extents())):
            with pytest.raises(CorruptError, match=rf"{vhdx_dynamic}: block 1"):
                read()
        assert any("entry 1" in c for c in image.engine.check().corruptions)
    # found as the BAT was loaded: writes are refused until check -r repairs the image
    with ds.open(vhdx_dynamic, "r+") as image, pytest.raises(ReadOnlyError, match="block 1"):
        image.engine.write(MiB, memoryview(b"x" * 512))
    out = tmp_path / "out.raw"
    runs: list[list[str | Path]] = [["convert", "-O", "raw", vhdx_dynamic, out],
                                    ["compare", vhdx_dynamic, vhdx_dynamic], ["map", vhdx_dynamic]]
    for args in runs:
        code, _, errs = ds_run(*args)
        assert code != 0, args
        one_error_line(errs, "block 1", str(vhdx_dynamic))
    assert not out.exists()
    code, out_text, errs = ds_run("check", vhdx_dynamic)  # reported, not raised
    assert code == 2 and "errors were found" in out_text and "block entry 1" in errs


def test_sector_bitmap_offset_beyond_any_file_is_corrupt(vhdx_child: Path) -> None:
    with ds.open(vhdx_child) as image:
        assert isinstance(image.engine, VhdxEngine)
        bitmap_index = image.engine.bitmap_index(0)
    poke(vhdx_child, bat_entry_at(vhdx_child, bitmap_index), ((1 << 63) | 6).to_bytes(8, "little"))
    with ds.open(vhdx_child) as image, \
            pytest.raises(CorruptError, match="sector bitmap of chunk 0"):
        image.pread(0, 4096)  # block 0 is partially present: its bits are in that bitmap


# -- 6. a VHDX cut short ----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [8, 64 * KiB + 1, 100 * KiB, MiB - 1])
def test_truncated_vhdx_is_truncated_not_another_format(vhdx_dynamic: Path, keep: int) -> None:
    with open(vhdx_dynamic, "r+b") as f:
        f.truncate(keep)
    assert probe(vhdx_dynamic) is VhdxEngine
    with pytest.raises(TruncatedError, match=rf"{vhdx_dynamic}: truncated to {keep} bytes"):
        ds.open(vhdx_dynamic)
    with pytest.raises(TruncatedError):
        ds.open(vhdx_dynamic, format="vhdx")
    code, _, errs = ds_run("info", vhdx_dynamic)
    assert code == 1
    line = one_error_line(errs, f"truncated to {keep} bytes")
    assert line.count(str(vhdx_dynamic)) == 1


# -- 7. error lines name their file -----------------------------------------------------------


def two_vhds(tmp_path: Path) -> tuple[Path, Path]:
    """Two fixed VHDs of the same content; the second's footer checksum is damaged (a fixed
    VHD has no footer copy to fall back on)."""
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    for path in (a, b):
        with ds.create(path, "vpc", 4 * MiB, subformat="fixed") as image:
            image.write(b"x" * MiB)
    footer = footer_of(b)
    footer.checksum ^= 1
    poke_end(b, -512, footer.build())
    return a, b


def test_error_lines_of_compare_and_convert_name_the_file(tmp_path: Path) -> None:
    a, b = two_vhds(tmp_path)
    runs: list[tuple[list[str | Path], int]] = [
        (["compare", a, b], 2), (["compare", b, a], 2),
        (["convert", "-O", "raw", b, tmp_path / "out.raw"], 1),
        (["convert", "-O", "vpc", a, b, tmp_path / "out.vhd"], 1)]
    for args, failure in runs:
        code, _, errs = ds_run(*args)
        assert code == failure, (args, errs)
        line = one_error_line(errs, "footer.checksum")
        assert line.startswith(f"diskspec: Could not open '{b}': "), line  # qemu-img's form
        assert line.count(str(b)) == 1 and str(a) not in line, line
    with pytest.raises(CorruptError, match=rf"^{b}: footer.checksum"):
        ds.open(b)


def test_vhdx_region_error_names_the_file(vhdx_dynamic: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.vhdx"
    good.write_bytes(vhdx_dynamic.read_bytes())
    table = region_table(vhdx_dynamic)
    next(e for e in table.entries if e.guid == BAT_GUID).file_offset = 1 << 40  # checksummed
    put_region_table(vhdx_dynamic, table)
    code, _, errs = ds_run("compare", good, vhdx_dynamic)
    assert code == 2
    line = one_error_line(errs, "region_table", "outside")
    assert line.startswith(f"diskspec: Could not open '{vhdx_dynamic}': ")  # qemu-img's form
    assert line.count(str(vhdx_dynamic)) == 1
    assert str(good) not in line

