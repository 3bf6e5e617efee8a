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
