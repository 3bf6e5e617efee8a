"""The engines diskspec knows, and probing a file for its format."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from .backend import open_file
from .engine import Engine
from .errors import DiskspecError, NotThisFormatError, UnsupportedFeatureError
from .foreign import foreign_format

PROBE_BYTES = 64 * 1024


#: format name (qemu-img's where it has one) -> module and class of its engine; an engine
#: is imported when first asked for, so a tool pays only for the formats it touches
ENGINES = {"raw": (".engines.raw.engine", "RawEngine"), "vpc": (".engines.vhd.engine", "VhdEngine"),
           "vhdx": (".engines.vhdx.engine", "VhdxEngine"),
           "qcow2": (".engines.qcow2.engine", "Qcow2Engine")}

ALIASES = {"vhd": "vpc"}


def _load(name: str) -> type[Engine]:
    module, cls = ENGINES[name]
    engine: type[Engine] = getattr(importlib.import_module(module, __package__), cls)
    return engine


def engines() -> dict[str, type[Engine]]:
    """Format name -> engine class, for every format."""
    return {name: _load(name) for name in ENGINES}


def engine_for(name: str) -> type[Engine]:
    key = ALIASES.get(name, name)
    if key not in ENGINES:
        raise DiskspecError(f"unknown format {name!r} (known: {', '.join(sorted(ENGINES))})")
    return _load(key)


def probe(path: Path) -> type[Engine]:
    """The engine that recognises the file by its content; raw when none does, unless the
    file carries the magic of a format without an engine (then an UnsupportedFeatureError)."""
    try:
        fd = open_file(path, os.O_RDONLY, devices=True)
    except FileNotFoundError:
        raise DiskspecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DiskspecError(f"{path}: is a directory") from None
    try:
        head = os.pread(fd, PROBE_BYTES, 0)
        size = os.lseek(fd, 0, os.SEEK_END)
        tail = os.pread(fd, PROBE_BYTES, max(0, size - PROBE_BYTES))
    finally:
        os.close(fd)
    scored = sorted(((cls.probe(head, tail, path), name, cls) for name, cls in engines().items()),
                    key=lambda t: (t[0], t[1]), reverse=True)
    best, name, cls = scored[0]
    if best <= 0:
        raise NotThisFormatError(f"{path}: no engine recognises this file")
    if name == "raw" and (other := foreign_format(head, tail)) is not None:
        raise UnsupportedFeatureError(f"{path} is a {other} image: diskspec has no {other} engine "
                                      f"(-f raw reads the file itself as a raw disk)")
    return cls
