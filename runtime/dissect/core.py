"""`dissect(path)`: recognise the format, build the tree, find overlaps and gaps."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import DiskspecError
from ..foreign import foreign_format
from . import gaps
from . import qcow2 as qcow2_dissect
from . import vhd as vhd_dissect
from . import vhdx as vhdx_dissect
from .common import MiB, Reader, human_size
from .model import Field, Node
from .options import Options

#: qemu-img's format names -> what people call them
NAMES = {"vpc": "VHD", "vhdx": "VHDX", "qcow2": "qcow2"}


def dissect(path: str | os.PathLike[str], *, bat: bool = False, scan_gaps: bool = True,
            gap_budget: int | None = None, options: Options | None = None) -> Node:
    """The forensic tree of an image file: every structure in file order with its fields,
    verdicts, damage, and the gaps between structures. Never writes to the file.

    `bat` lists every BAT entry (a table on the BAT node); `scan_gaps` reads unreferenced
    ranges looking for non-zero bytes, at most `gap_budget` bytes (then it samples).
    """
    if options is None:
        options = Options(bat=bat, scan_gaps=scan_gaps)
        if gap_budget is not None:
            options.gap_budget = gap_budget
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise DiskspecError(f"{p}: no such file") from None
    except OSError as exc:
        raise DiskspecError(f"{p}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DiskspecError(f"{p}: is a directory")
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise DiskspecError(f"{p}: not a regular file or block device")
    try:
        reader = Reader(p)
    except OSError as exc:
        raise DiskspecError(f"{p}: {exc.strerror}") from None
    with reader:
        return _dissect(p, reader, options)


def detect(head: bytes, tail: bytes, size: int) -> str:
    """"vpc", "vhdx", "qcow2" or "raw", from the first MiB and the last 512 bytes."""
    from diskspec.formats import vhd

    if tail[:8] == vhd_dissect.COOKIE and len(tail) == 512 and vhd.Footer.verify_buffer(tail):
        footer = vhd.Footer.parse(tail)
        # a fixed VHD may hold any bytes at offset 0 (a VHDX, even): its footer says so by
        # covering exactly the rest of the file; a dynamic one keeps a copy at offset 0
        if head[:512] == tail or (footer.disk_type == vhd.DiskType.FIXED and
                                  footer.current_size == size - 512):
            return "vpc"
        if head[:8] != vhdx_dissect.SIGNATURE:
            return "vpc"
    if head[:8] == vhdx_dissect.SIGNATURE:
        return "vhdx"
    if qcow2_dissect.probe(head):
        return "qcow2"
    if vhd_dissect.probe(head[:512], tail):
        return "vpc"
    if size >= 4 * 64 * 1024 and vhdx_dissect.probe(head):
        return "vhdx"
    return "raw"


def _dissect(path: Path, reader: Reader, options: Options) -> Node:
    size = reader.size
    root = Node(path.name, 0, size, "image")
    head = reader.read(0, MiB)
    tail = reader.read(max(0, size - 512), 512)
    fmt = detect(head, tail, size)
    root.fields += [
        Field("path", 0, 0, str(path), None, ""),
        Field("format", 0, 0, fmt, NAMES.get(fmt, "raw or unknown"),
              "qemu-img's format name"),
        Field("file_size", 0, 0, size, human_size(size), ""),
    ]
    if fmt == "vhdx":
        vhdx_dissect.dissect(reader, root, options)
    elif fmt == "qcow2":
        qcow2_dissect.dissect(reader, root, options)
    elif fmt == "vpc":
        vhd_dissect.dissect(reader, root, options)
    else:
        _raw(root, reader, head, tail)
    gaps.overlaps(root)
    _failed_verdicts_are_damage(root)
    if fmt != "raw":
        gaps.add_gaps(root, reader, gaps.ScanOptions(options.scan_gaps, options.gap_budget))
    root.sort()
    sub = root.value("subformat")
    damage = len(root.all_damage())
    root.summary = (f"{NAMES.get(fmt, 'raw or unknown format')}"
                    + (f" {sub}" if sub else "") + f", {human_size(size)} file"
                    + (f", {damage} problem(s) found" if damage else ", no damage found"))
    return root


def _failed_verdicts_are_damage(root: Node) -> None:
    """Every failed verdict is a problem: a node whose failed verdict left no damage note (a
    checksum that could not be computed, say) gets one, so the damage list, the JSON's
    "damaged" and `diskspec dissect`'s exit code all say the same."""
    for _path, node in root.walk():
        for v in node.verdicts:
            if not v.ok and not node.damage:
                node.damage.append(f"{v.name} not verified: {v.detail}" if v.computed is None
                                   else f"{v.name} bad: {v.detail}" if v.detail
                                   else f"{v.name} bad")


def _raw(root: Node, reader: Reader, head: bytes, tail: bytes) -> None:
    other = foreign_format(head, tail)
    if other:
        root.notes.append(f"the file starts with the {other} magic; dissect does not decode "
                          f"{other} yet, so it is shown as raw data")
    else:
        root.notes.append("raw or unknown format: no VHD, VHDX or qcow2 structure was recognised")
    root.fields.append(Field("subformat", 0, 0, None, None, ""))
    root.fields.append(Field("virtual_size", 0, 0, reader.size, human_size(reader.size),
                             "a raw file is its own virtual disk"))
    if reader.size:
        node = root.add(Node("data", 0, reader.size, "data",
                             f"raw data{f' ({other} image)' if other else ''}"))
        allocated = sum(e - s for s, e in reader.data_ranges(0, reader.size))
        node.fields.append(Field("allocated_bytes", 0, 0, allocated,
                                 "bytes not in a hole of the sparse file", ""))
