"""Formats diskspec recognises by their magic but has no engine for.

Probing falls back to raw when no engine claims a file; for a qcow2 or VMDK file that would
read the container's bytes as if they were the guest disk (and convert would copy them as
such). The probe and dissect ask here first and name the format instead.

The magics of formats with a spec in formats/ come from the generated codecs (the `contents`
of offset 0 of their header types), so the .ksy stays the one place they are written. The
others, which have no spec here, are listed below as qemu's probes know them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

#: formats/ modules whose header types' magic names a format without an engine, and the name
#: a user knows the format by (qemu-img's)
SPECS = {"qcow2": "qcow2", "qed": "qed", "fvd": "fvd", "add_cow": "add-cow"}

#: (format, offset, magic) of formats without a spec here; a negative offset counts from the
#: end of the file
MAGICS = [
    ("vmdk", 0, b"KDMV"),  # hosted sparse extent
    ("vmdk", 0, b"COWD"),  # ESX sparse extent
    ("vmdk", 0, b"# Disk DescriptorFile"),  # text descriptor
    ("vdi", 0x40, b"\x7f\x10\xda\xbe"),  # signature 0xbeda107f, little-endian
    ("parallels", 0, b"WithoutFreeSpace"),
    ("parallels", 0, b"WithouFreSpacExt"),
    ("luks", 0, b"LUKS\xba\xbe"),
    ("bochs", 0, b"Bochs Virtual HD Image"),
    ("cloop", 0, b"#!/bin/sh\n#V2.0 Format\n"),
    ("dmg", -512, b"koly"),  # the trailer
]


def spec_magics(spec: str) -> Iterator[tuple[str, bytes]]:
    """(type name, magic) for every type of the codec module formats/<spec>.py that starts
    with a magic (a `contents` field at offset 0)."""
    module = importlib.import_module(f"diskspec.formats.{spec}")
    for name, cls in module.TYPES.items():
        for row in cls.FIELDS:
            if row.offset == 0 and row.contents:
                yield name, row.contents


def foreign_format(head: bytes, tail: bytes) -> str | None:
    """The name of the engine-less format whose magic the file carries, or None.
    `head`: the file's first bytes (at least 64 KiB, or the whole file); `tail`: its last
    bytes (at least 512, or the whole file)."""
    for spec, name in SPECS.items():
        for type_name, magic in spec_magics(spec):
            if type_name.startswith("header") and head.startswith(magic):
                # qcow (version 1) shares qcow2's magic; qemu names them apart
                return "qcow" if name == "qcow2" and head[4:8] == b"\0\0\0\x01" else name
    for name, offset, magic in MAGICS:
        if offset >= 0:
            if head[offset : offset + len(magic)] == magic:
                return name
        elif len(tail) >= -offset and tail[len(tail) + offset :].startswith(magic):
            return name
    return None
