"""Creating VHDX images (dynamic, fixed, differencing) with the generated codecs.

Layout, like QEMU's: header section (1 MiB), log at 1 MiB, BAT region after the log,
metadata region after the BAT (table, then the items at +64 KiB), payload after that.
"""

from __future__ import annotations

import os
import re
import uuid
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diskspec.formats import vhdx

from ...backend import new_file
from ...errors import DiskspecError
from ...policy import named_file
from ...util import ceil_div, round_up
from . import guids

if TYPE_CHECKING:
    from .engine import VhdxEngine

KIB, MIB = 1 << 10, 1 << 20
SUBFORMATS = ("dynamic", "fixed", "differencing")


def auto_block_size(size: int) -> int:
    """QEMU's default: <= 1 GiB 8 MiB; <= 100 GiB 16 MiB; <= 32 TiB 32 MiB; else 64 MiB."""
    for limit, block in ((1 << 30, 8 * MIB), (100 << 30, 16 * MIB), (32 << 40, 32 * MIB)):
        if size <= limit:
            return block
    return 64 * MIB


def create(path: Path, size: int | None, subformat: str = "dynamic", block_size: int = 0,
           log_size: int = MIB, logical_sector_size: int = 512, physical_sector_size: int = 512,
           block_state_zero: bool = False, parent: str | os.PathLike[str] | None = None,
           **options: Any) -> VhdxEngine:
    from .engine import VhdxEngine

    if options:
        raise DiskspecError(f"unknown VHDX create option(s): {', '.join(sorted(options))}")
    if subformat not in SUBFORMATS:
        raise DiskspecError(f"VHDX subformat must be one of {', '.join(SUBFORMATS)}, not {subformat!r}")
    if block_state_zero and subformat == "differencing":
        raise DiskspecError("block_state_zero would hide the parent of a differencing VHDX")
    if (parent is not None) != (subformat == "differencing"):
        raise DiskspecError("a differencing VHDX needs a parent, and only it takes one")
    linkage, parent_path, parent_size = _parent_identity(Path(parent), path) \
        if parent is not None else ("", None, None)
    if size is None:
        if parent_size is None:
            raise DiskspecError("a size is needed")
        size = parent_size
    elif parent_size is not None and size != parent_size:  # it could never be opened over it
        raise DiskspecError(f"a differencing VHDX has its parent's size ({parent_size} bytes), "
                            f"not {size}")
    if logical_sector_size not in (512, 4096) or physical_sector_size not in (512, 4096):
        raise DiskspecError("sector sizes must be 512 or 4096")
    if size > 64 << 40:
        raise DiskspecError("Image size too large; max of 64TB")  # qemu-img's words
    if size < 0:  # 0 is a valid, empty disk (as with qemu-img)
        raise DiskspecError(f"size must not be negative, not {size}")
    size = round_up(size, logical_sector_size)  # as qemu-img: 1000 bytes make a 1 KiB disk
    block_size = block_size or auto_block_size(size)
    if block_size < MIB or block_size > 256 * MIB or block_size & (block_size - 1):
        raise DiskspecError(f"block_size must be a power of two from 1 MiB to 256 MiB, not {block_size}")
    log_size = round_up(log_size, MIB)  # qemu rounds it up: log_size=1500k is 2 MiB
    if log_size < MIB or log_size % MIB:
        raise DiskspecError("log_size must be a multiple of 1 MiB")
    blocks = ceil_div(size, block_size)
    cr = (1 << 23) * logical_sector_size // block_size
    # [MS-VHDX] 2.5: differencing BATs always end with a sector bitmap entry
    entries = ceil_div(blocks, cr) * (cr + 1) if subformat == "differencing" else \
        blocks + (blocks - 1) // cr
    # qemu computes the count of an empty disk with an unsigned 32-bit blocks - 1 that wraps,
    # and refuses a BAT region smaller than that: reserve it (a hole) so qemu opens ours
    reserved = entries if blocks else (0xFFFFFFFF >> (cr.bit_length() - 1))
    entries = max(entries, 0)
    log_offset = MIB
    bat_offset = log_offset + log_size
    bat_length = round_up(reserved * 8, MIB)
    meta_offset = bat_offset + bat_length
    meta_length = MIB
    data_offset = meta_offset + meta_length

    bat = array("Q", bytes(8 * entries))
    if subformat == "fixed":
        for b in range(blocks):
            bat[b + b // cr] = (data_offset + b * block_size) | vhdx.PayloadBlockState.FULLY_PRESENT
    elif block_state_zero:
        for b in range(blocks):
            bat[b + b // cr] = vhdx.PayloadBlockState.ZERO

    with new_file(path) as backend:
        ident = vhdx.FileIdentifier.new(creator="diskspec".ljust(256, "\0"))
        backend.pwrite(0, ident.build())
        header = vhdx.Header.new(sequence_number=1, file_write_guid=uuid.uuid4().bytes_le,
                                 data_write_guid=uuid.uuid4().bytes_le, log_version=0, version=1,
                                 log_length=log_size, log_offset=log_offset)
        for at in (64 * KIB, 128 * KIB):
            backend.pwrite(at, header.update_checksum().build())
            header.sequence_number += 1
        regions = vhdx.RegionTable.new(entry_count=2, entries=[
            vhdx.RegionTableEntry(guids.BAT_REGION, bat_offset, bat_length, 1, 0),
            vhdx.RegionTableEntry(guids.METADATA_REGION, meta_offset, meta_length, 1, 0)],
            reserved_tail=bytes(64 * KIB - 16 - 64))
        for at in (192 * KIB, 256 * KIB):
            backend.pwrite(at, regions.update_checksum().build())
        if entries:
            backend.pwrite(bat_offset, vhdx.Bat(num_entries=entries, entries=bat).build())
        backend.pwrite(meta_offset, _metadata(size, block_size, logical_sector_size,
                                              physical_sector_size, subformat, linkage,
                                              parent_path, path))
        end = data_offset + (blocks * block_size if subformat == "fixed" else 0)
        backend.truncate(max(end, meta_offset + meta_length))  # sparse: data reads as zeros
    return VhdxEngine.open(path, writable=True)


def _metadata(size: int, block_size: int, lss: int, pss: int, subformat: str, linkage: str,
              parent: Path | None, child: Path) -> bytes:
    items: list[tuple[bytes, bytes, int]] = [  # (guid, payload, flags: user/virtual-disk/required)
        (guids.FILE_PARAMETERS, vhdx.FileParameters(
            block_size, int(subformat == "fixed"), int(subformat == "differencing"), 0).build(), 0b100),
        (guids.VIRTUAL_DISK_SIZE, vhdx.VirtualDiskSize(size).build(), 0b110),
        (guids.VIRTUAL_DISK_ID, vhdx.VirtualDiskId(uuid.uuid4().bytes_le).build(), 0b110),
        (guids.LOGICAL_SECTOR_SIZE, vhdx.LogicalSectorSize(lss).build(), 0b110),
        (guids.PHYSICAL_SECTOR_SIZE, vhdx.PhysicalSectorSize(pss).build(), 0b110),
    ]
    if parent is not None:
        items.append((guids.PARENT_LOCATOR, _locator(linkage, parent, child), 0b100))
    region = bytearray(MIB)
    at = 64 * KIB
    entries = []
    for item_id, payload, flags in items:
        entries.append(vhdx.MetadataTableEntry(item_id, at, len(payload), flags & 1, flags >> 1 & 1,
                                               flags >> 2 & 1, 0, 0))
        region[at : at + len(payload)] = payload
        at += round_up(len(payload), 8)
    table = vhdx.MetadataTable(vhdx.MetadataTableHeader(b"metadata", 0, len(entries), bytes(20)),
                               entries, bytes(64 * KIB - 32 - 32 * len(entries)))
    region[: 64 * KIB] = table.build()
    return bytes(region)


def win32_absolute(path: str) -> str:
    """absolute_win32_path's value: the extended-length form \\\\?\\C:\\... only for a
    Windows path (a drive letter, or UNC); a POSIX path is written as it is, since a \\\\?\\
    in front of /home/... names nothing on either system."""
    if re.match(r"^[A-Za-z]:[\\/]", path):
        return "\\\\?\\" + path.replace("/", "\\")
    if path.startswith("\\\\") and not path.startswith("\\\\?\\"):
        return "\\\\?\\UNC\\" + path[2:]
    return path


def _locator(linkage: str, parent: Path, child: Path) -> bytes:
    """The VHDX parent locator: parent_linkage, relative_path (\\ separators), and the
    absolute path of the parent on this host as absolute_win32_path."""
    relative = os.path.relpath(parent.resolve(), child.resolve().parent).replace("/", "\\")
    pairs = [("parent_linkage", "{" + linkage + "}"), ("relative_path", relative),
             ("absolute_win32_path", win32_absolute(str(parent.resolve())))]
    head = 20 + 12 * len(pairs)
    strings = bytearray()
    entries = []
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        entries.append(vhdx.ParentLocatorEntry(head + len(strings), head + len(strings) + len(k),
                                               len(k), len(v)))
        strings += k + v
    loc = vhdx.ParentLocator(vhdx.ParentLocatorHeader(guids.VHDX_LOCATOR_TYPE, 0, len(pairs)), entries)
    return loc.build() + bytes(strings)


def _parent_identity(parent: Path, child: Path) -> tuple[str, Path, int]:
    """The parent's data write GUID (the child's parent_linkage), its path and its size."""
    from ...image import open as open_image
    from .engine import VhdxEngine

    parent = named_file(child, parent)
    with open_image(parent, backing=False) as image:  # its size and identity: itself only
        engine = image.engine
        guid = engine.header.data_write_guid if isinstance(engine, VhdxEngine) else bytes(16)
        size = image.size
    return guids.text(guid), parent, size
