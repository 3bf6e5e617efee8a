"""The engines diskspec knows, and probing a file for its format."""

from __future__ import annotations

import os
from pathlib import Path

from .engine import Engine
from .errors import DiskspecError, NotThisFormatError
from .raw import RawEngine

PROBE_BYTES = 64 * 1024


def engines() -> dict[str, type[Engine]]:
    """Format name (qemu-img's where it has one) -> engine class."""
    from .vhd.engine import VhdEngine
    from .vhdx.engine import VhdxEngine

    return {"raw": RawEngine, "vpc": VhdEngine, "vhdx": VhdxEngine}


ALIASES = {"vhd": "vpc"}


def engine_for(name: str) -> type[Engine]:
    known = engines()
    key = ALIASES.get(name, name)
    if key not in known:
        raise DiskspecError(f"unknown format {name!r} (known: {', '.join(sorted(known))})")
    return known[key]


def probe(path: Path) -> type[Engine]:
    """The engine that recognises the file by its content; raw when none does."""
    try:
        with open(path, "rb") as f:
            head = f.read(PROBE_BYTES)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - PROBE_BYTES))
            tail = f.read(PROBE_BYTES)
    except FileNotFoundError:
        raise DiskspecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DiskspecError(f"{path}: is a directory") from None
    scored = sorted(((cls.probe(head, tail, path), name, cls) for name, cls in engines().items()),
                    key=lambda t: (t[0], t[1]), reverse=True)
    best, _, cls = scored[0]
    if best <= 0:
        raise NotThisFormatError(f"{path}: no engine recognises this file")
    return cls
