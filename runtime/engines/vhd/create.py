"""Creating VHD images: fixed, dynamic (QEMU's layout) and differencing (with W2ru, W2ku and
MacX parent locators). Every structure is built with the generated codecs."""

from __future__ import annotations

import os
import time
import urllib.parse
import uuid
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diskspec.formats import vhd

from ...backend import FileBackend, new_file
from ...errors import DiskspecError
from ...policy import named_file
from ...util import ceil_div, round_up
from . import geometry, locators

if TYPE_CHECKING:
    from .engine import VhdEngine

SECTOR = 512
VHD_EPOCH = 946684800  # 2000-01-01 00:00:00 UTC in Unix time
DEFAULT_BLOCK = 2 * 1024 * 1024
SUBFORMATS = ("dynamic", "fixed", "differencing")


def vhd_time(unix: float | None = None) -> int:
    t = int(time.time() if unix is None else unix) - VHD_EPOCH
    return max(0, min(t, 0xFFFFFFFF))


def make_footer(size: int, chs: tuple[int, int, int], disk_type: vhd.DiskType, force_size: bool,
                creator: int | None) -> vhd.Footer:
    """A footer as QEMU writes one: creator "qemu" (sized by geometry) or "qem2" (by size)."""
    app = creator if creator is not None else (
        vhd.CreatorApplication.QEMU_FORCE_SIZE if force_size else vhd.CreatorApplication.QEMU)
    return vhd.Footer.new(
        features=2, format_version=0x00010000,
        data_offset=0xFFFFFFFFFFFFFFFF if disk_type == vhd.DiskType.FIXED else SECTOR,
        timestamp=vhd_time(), creator_application=app, creator_version=0x00050003,
        creator_host_os=vhd.CreatorHostOs.WINDOWS, original_size=size, current_size=size,
        disk_geometry=vhd.DiskGeometry(*chs), disk_type=disk_type, unique_id=uuid.uuid4().bytes,
    ).update_checksum()


def create(path: Path, size: int | None, subformat: str = "dynamic",
           block_size: int = DEFAULT_BLOCK, force_size: bool = False,
           parent: str | os.PathLike[str] | None = None, creator: str | None = None,
           **options: Any) -> VhdEngine:
    """Create `path`. size may be None for a differencing image (the parent's size)."""
    from .engine import VhdEngine

    if options:
        raise DiskspecError(f"unknown VHD create option(s): {', '.join(sorted(options))}")
    if subformat not in SUBFORMATS:
        raise DiskspecError(f"VHD subformat must be one of {', '.join(SUBFORMATS)}, not {subformat!r}")
    if (parent is not None) != (subformat == "differencing"):
        raise DiskspecError("a differencing VHD needs a parent, and only it takes one")
    if block_size < SECTOR or block_size & (block_size - 1) or block_size > 1 << 31:
        raise DiskspecError(f"block_size must be a power of two from 512 B to 2 GiB, not {block_size}")
    creator_code = _creator_code(creator)
    parent_info = _parent_info(Path(parent), path) if parent is not None else None
    if size is None:
        if parent_info is None:
            raise DiskspecError("a size is needed")
        size = round_up(parent_info.size, SECTOR)
    elif parent_info is not None and size != round_up(parent_info.size, SECTOR):
        raise DiskspecError(f"a differencing VHD has its parent's size ({parent_info.size} bytes), "
                            f"not {size}")
    if size < 0:  # 0 is a valid, empty disk (qemu-img creates it)
        raise DiskspecError(f"size must not be negative, not {size}")
    if parent_info is not None:
        force_size = force_size or size != geometry.creation_size(size, False)[0]
    size, chs = geometry.creation_size(size, force_size)
    disk_type = {"dynamic": vhd.DiskType.DYNAMIC, "fixed": vhd.DiskType.FIXED,
                 "differencing": vhd.DiskType.DIFFERENCING}[subformat]
    footer = make_footer(size, chs, disk_type, force_size, creator_code)
    with new_file(path) as backend:
        if disk_type == vhd.DiskType.FIXED:
            backend.truncate(size)  # sparse: the data area reads as zeros
            backend.pwrite(size, footer.build())
        else:
            _write_dynamic(backend, footer, size, block_size, parent_info)
    return VhdEngine.open(path, writable=True)


class _Parent:
    def __init__(self, path: Path, size: int, unique_id: bytes, mtime: float):
        self.path, self.size, self.unique_id, self.mtime = path, size, unique_id, mtime


def _parent_info(parent: Path, child: Path) -> _Parent:
    from ...image import open as open_image

    parent = named_file(child, parent)
    with open_image(parent, backing=False) as image:  # its size and identity: itself only
        from .engine import VhdEngine

        uid = image.engine.footer.unique_id if isinstance(image.engine, VhdEngine) else bytes(16)
        return _Parent(parent, image.size, uid, parent.stat().st_mtime)


def _creator_code(creator: str | None) -> int | None:
    if creator is None:
        return None
    raw = creator.encode("latin-1")
    if len(raw) > 4:
        raise DiskspecError(f"creator tag {creator!r} is longer than 4 characters")
    return int.from_bytes(raw.ljust(4, b" "), "big")


def locator_data(parent: Path, child_dir: Path) -> list[tuple[vhd.PlatformCode, bytes]]:
    """The W2ku, W2ru and MacX locator data for a parent at absolute path `parent`."""
    return [
        (vhd.PlatformCode.W2KU, locators.encode_windows(str(parent), relative=False)),
        (vhd.PlatformCode.W2RU,
         locators.encode_windows(locators.relative_to(parent, child_dir), relative=True)),
        (vhd.PlatformCode.MACX, ("file://" + urllib.parse.quote(parent.as_posix())).encode("utf-8")),
    ]


def _write_dynamic(backend: FileBackend, footer: vhd.Footer, size: int, block_size: int,
                   parent: _Parent | None) -> None:
    entries = ceil_div(size, block_size)
    table_offset = 3 * SECTOR
    bat = vhd.Bat(num_entries=entries, entries=array("I", [0xFFFFFFFF]) * entries).build()
    bat += b"\xff" * (round_up(len(bat), SECTOR) - len(bat))  # QEMU pads with 0xFF
    end = table_offset + len(bat)
    header = vhd.DynamicHeader.new(
        data_offset=0xFFFFFFFFFFFFFFFF, table_offset=table_offset, header_version=0x00010000,
        max_table_entries=entries, block_size=block_size, parent_unicode_name="\0" * 256)
    areas: list[tuple[int, bytes]] = []
    if parent is not None:
        header.parent_unique_id = parent.unique_id
        header.parent_timestamp = vhd_time(parent.mtime)
        header.parent_unicode_name = parent.path.name[:256].ljust(256, "\0")
        child_dir = backend.path.parent
        absolute = parent.path.resolve()
        for i, (code, data) in enumerate(locator_data(absolute, child_dir)):
            space = max(1024, round_up(len(data), SECTOR))
            header.parent_locators[i] = vhd.ParentLocator(code, space, len(data), 0, end)
            areas.append((end, data + bytes(space - len(data))))
            end += space
    header.update_checksum()
    backend.pwrite(0, footer.build())
    backend.pwrite(SECTOR, header.build())
    backend.pwrite(table_offset, bat)
    for at, data in areas:
        backend.pwrite(at, data)
    backend.pwrite(end, footer.build())  # the first block will go where this footer is
