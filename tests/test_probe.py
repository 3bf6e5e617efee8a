"""Probing: files of formats without an engine are named, never read as raw by accident.

The oracle is qemu-img: it makes the qcow2, QED, VMDK, VDI and Parallels images, and its own
`info` must name the same format. FVD and add-cow (no qemu-img in Debian can make them) are
headers built by the generated codecs, whose magics the Kaitai oracle tests hold to the specs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.formats import add_cow, fvd
from diskspec.runtime.dissect import dissect
from diskspec.runtime.errors import UnsupportedFeatureError
from diskspec.runtime.foreign import foreign_format
from diskspec.runtime.registry import engines

from .conftest import run
from .test_cli import ds_run, one_error_line

#: qemu-img create -f FORMAT [-o OPTIONS]: the format name diskspec must report
QEMU_MADE = {"qcow2": ("qcow2", ""), "qcow2-v2": ("qcow2", "compat=0.10"), "qed": ("qed", ""),
             "vmdk": ("vmdk", ""), "vmdk-flat": ("vmdk", "subformat=monolithicFlat"),
             "vmdk-stream": ("vmdk", "subformat=streamOptimized"), "vdi": ("vdi", ""),
             "parallels": ("parallels", "")}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory, qemu_img: str) -> dict[str, tuple[Path, str]]:
    """name -> (image file, format name) for every engine-less format here."""
    base = tmp_path_factory.mktemp("foreign")
    out: dict[str, tuple[Path, str]] = {}
    for name, (fmt, options) in QEMU_MADE.items():
        path = base / f"{name}.img"
        run(qemu_img, "create", "-q", "-f", fmt, *(["-o", options] if options else []), str(path), "4M")
        assert json.loads(run(qemu_img, "info", "--output=json", str(path)))["format"] == fmt
        out[name] = (path, fmt)
    for name, codec_type, fmt in (("fvd", fvd.Header, "fvd"), ("add-cow", add_cow.HeaderV7, "add-cow")):
        magic = next(row.contents for row in codec_type.FIELDS if row.offset == 0 and row.contents)
        path = base / f"{name}.img"
        path.write_bytes(magic + bytes(64 * 1024 - len(magic)))
        out[name] = (path, fmt)
    return out


def test_engine_less_formats_are_named_not_read_as_raw(foreign: dict[str, tuple[Path, str]],
                                                       tmp_path: Path) -> None:
    for name, (path, fmt) in foreign.items():
        if fmt in engines():  # (qcow2 has an engine now: it probes as itself)
            with ds.open(path) as image:
                assert image.format == fmt
            continue
        with pytest.raises(UnsupportedFeatureError, match=f"is a {fmt} image"):
            ds.open(path)
        for command in (["info"], ["map", "--output=json"], ["check"]):
            code, out, errs = ds_run(*command, path)
            assert code == 1 and out == "", (name, command)
            line = one_error_line(errs)
            assert f"not supported: {path} is a {fmt} image" in line and "-f raw" in line
        code, _, errs = ds_run("convert", "-O", "vpc", path, tmp_path / "out.vhd")
        assert code == 1 and f"{fmt} image" in one_error_line(errs)
        assert list(tmp_path.iterdir()) == []  # nothing converted, nothing left behind
        # asked for by name, raw is still the file itself
        with ds.open(path, format="raw") as image:
            assert image.size == path.stat().st_size
        # dissect shows the file as raw data and says which format it is
        assert any(f"{fmt} magic" in note for note in dissect(path).notes), name


def test_foreign_magics() -> None:
    page = bytes(64 * 1024)
    assert foreign_format(b"QFI\xfb\0\0\0\x01" + page, b"") == "qcow"
    assert foreign_format(b"QFI\xfb\0\0\0\x03" + page, b"") == "qcow2"
    assert foreign_format(page, page[:-512] + b"koly" + bytes(508)) == "dmg"
    vdi = bytearray(page)
    vdi[0x40:0x44] = b"\x7f\x10\xda\xbe"
    assert foreign_format(bytes(vdi), b"") == "vdi"
    assert foreign_format(page, page) is None
    assert foreign_format(b"", b"") is None
    assert foreign_format(b"koly", b"koly") is None  # a trailer needs 512 bytes at the end
