"""`diskspec demo`: the main job on a built-in example.

Builds a small dynamic VHD from the generated codecs alone, reads it back, verifies every
checksum and prints each structure's fields with their file offsets.
"""

from __future__ import annotations

import tempfile
from array import array
from pathlib import Path
from typing import Any

from diskspec.formats import vhd

BLOCK = 2 * 1024 * 1024
SIZE = 8 * 1024 * 1024


def build_example() -> bytes:
    """An 8 MiB dynamic VHD with an empty BAT, made from the codecs."""
    entries = SIZE // BLOCK
    footer = vhd.Footer.new(
        features=2, format_version=0x00010000, data_offset=512,
        creator_application=vhd.CreatorApplication.QEMU_FORCE_SIZE, creator_version=0x00050003,
        creator_host_os=vhd.CreatorHostOs.WINDOWS, original_size=SIZE, current_size=SIZE,
        disk_geometry=vhd.DiskGeometry(65535, 16, 255), disk_type=vhd.DiskType.DYNAMIC,
        unique_id=bytes(range(16)),
    ).update_checksum()
    header = vhd.DynamicHeader.new(
        data_offset=0xFFFFFFFFFFFFFFFF, table_offset=1536, header_version=0x00010000,
        max_table_entries=entries, block_size=BLOCK, parent_unicode_name="\0" * 256,
    ).update_checksum()
    bat = vhd.Bat(num_entries=entries, entries=array("I", [0xFFFFFFFF] * entries)).build()
    bat += b"\xff" * (-len(bat) % 512)
    return footer.build() + header.build() + bat + footer.build()


def show(title: str, record: Any, base: int) -> None:
    print(f"{title} at offset {base:#x} ({type(record).SIZE} bytes)")
    for row in type(record).FIELDS:
        if row.offset is None or row.name.startswith("reserved"):
            continue
        value = getattr(record, row.name)
        text = value.hex() if isinstance(value, bytes) else repr(value)
        print(f"  {base + row.offset:#08x} {row.name:<22} {text[:60]}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.vhd"
        path.write_bytes(build_example())
        data = path.read_bytes()
        tail = len(data) - 512
        footer = vhd.Footer.parse(data, tail)
        header = vhd.DynamicHeader.parse(data, footer.data_offset)
        bat = vhd.Bat.parse(data, header.table_offset, num_entries=header.max_table_entries)
        print(f"{path.name}: {len(data)} bytes, virtual size {footer.current_size} bytes")
        show("footer", footer, tail)
        show("dynamic header", header, footer.data_offset)
        print(f"BAT at {header.table_offset:#x}: {len(bat.entries)} entries, "
              f"{sum(e != 0xFFFFFFFF for e in bat.entries)} allocated")
        ok = vhd.Footer.verify_buffer(data, tail) and vhd.Footer.verify_buffer(data, 0) \
            and vhd.DynamicHeader.verify_buffer(data, footer.data_offset)
        print("checksums:", "all valid" if ok else "BAD")
        return 0 if ok else 1
