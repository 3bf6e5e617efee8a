"""What the kit needs to know of a format that the registry cannot tell: where each
engine's allocation barrier is (to show the crash model notices its removal) and how to
make a table entry of an image point past the end of its file. A new engine adds its
lines here; an engine without an allocation path (raw) has no entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import diskspec.runtime as ds
from diskspec.runtime.engine import Engine
from diskspec.runtime.engines.vhd.engine import VhdEngine
from diskspec.runtime.engines.vhdx.engine import VhdxEngine

MIB = 1 << 20

#: format -> (engine class, the method whose barrier orders data before the table entry)
ALLOCATION_BARRIERS: dict[str, tuple[type[Engine], str]] = {
    "vpc": (VhdEngine, "_allocate"),
    "vhdx": (VhdxEngine, "_write_block"),
}


def _vhd_entry_past_eof(path: Path) -> int:
    """Point the first allocated BAT entry of a dynamic VHD past the end; returns the block."""
    with ds.open(path, format="vpc", backing=False) as image:
        engine = image.engine
        assert isinstance(engine, VhdEngine) and engine.header is not None
        block = next(i for i, e in enumerate(engine.bat) if e != 0xFFFFFFFF)
        at = engine.header.table_offset + 4 * block
    sectors = path.stat().st_size // 512 + 64
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(sectors.to_bytes(4, "big"))
    return block


def _vhdx_entry_past_eof(path: Path) -> int:
    """Point the first fully present payload BAT entry of a VHDX past the end."""
    with ds.open(path, format="vhdx", backing=False) as image:
        engine = image.engine
        assert isinstance(engine, VhdxEngine)
        index = next(i for i, e in enumerate(engine.bat) if e & 7 == 6)
        at = engine.bat_region.file_offset + 8 * index
    past = (path.stat().st_size // MIB + 16) * MIB
    with open(path, "r+b") as f:
        f.seek(at)
        f.write((past | 6).to_bytes(8, "little"))
    return index


#: format -> a function that makes one table entry of a (filled) image point past the end
#: of the file, returning the entry's index
ENTRY_PAST_EOF: dict[str, Callable[[Path], int]] = {
    "vpc": _vhd_entry_past_eof,
    "vhdx": _vhdx_entry_past_eof,
}


# -- named hostile inputs (the audit's minimal cases), besides the generated mutations ---------


def _vhdx_odd_locator_value(path: Path) -> None:
    """A parent-locator value of odd byte length: half a UTF-16 code unit."""
    from diskspec.formats import vhdx

    from ..test_vhdx_engine import PARENT_LOCATOR, metadata_item, poke
    at, raw = metadata_item(path, PARENT_LOCATOR)
    entry = vhdx.ParentLocatorEntry.parse(raw, 20)
    entry.value_length -= 1
    poke(path, at + 20, entry.build())


def _vhdx_surrogate_in_locator(path: Path) -> None:
    """A lone surrogate in a parent path (same length: the item keeps its size)."""
    from .. import samples
    from ..test_vhdx_engine import PARENT_LOCATOR, patch_item
    with ds.open(path, format="vhdx", backing=False) as image:
        assert isinstance(image.engine, VhdxEngine)
        locator = dict(image.engine.locator)
    key = next(k for k in locator if k.endswith("path"))
    locator[key] = locator[key][:-1] + "\ud800"
    patch_item(path, PARENT_LOCATOR, samples.vhdx_parent_locator(list(locator.items())))


def _vhdx_bat_offset_2_63(path: Path) -> None:
    """A present block at file offset 2^63 (the BAT has no checksum to fix)."""
    with ds.open(path, format="vhdx", backing=False) as image:
        engine = image.engine
        assert isinstance(engine, VhdxEngine)
        at = engine.bat_region.file_offset
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(((1 << 63) | 6).to_bytes(8, "little"))


def _vhd_surrogate_in_parent_name(path: Path) -> None:
    from ..test_vhd_engine import patch_header
    patch_header(path, parent_unicode_name="par\udc80ent.vhd".ljust(256, "\0"))


def _vhd_nul_in_locator(path: Path) -> None:
    from diskspec.formats import vhd

    from ..test_vhd_engine import set_locators
    set_locators(path, [(vhd.PlatformCode.W2RU, "par\0ent.vhd".encode("utf-16-le"))])


#: format -> (name, needs a differencing image, recipe that damages the image in place)
HOSTILE_INPUTS: dict[str, list[tuple[str, bool, Callable[[Path], None]]]] = {
    "vhdx": [("odd-length locator value", True, _vhdx_odd_locator_value),
             ("surrogate in a locator", True, _vhdx_surrogate_in_locator),
             ("BAT offset 2^63", False, _vhdx_bat_offset_2_63)],
    "vpc": [("surrogate in the parent name", True, _vhd_surrogate_in_parent_name),
            ("NUL in a locator", True, _vhd_nul_in_locator)],
}
