"""Block status through a backing chain: qemu-img map's entries, also used by convert/compare.

For each run of the guest disk, the topmost layer that decides its content (depth 0 = the
image itself) and what it says, in qemu's words:

- present: this layer provides the run (false where the whole chain leaves it unallocated);
- zero: the run reads as zeros;
- data: the run is stored as data (in the layer's file, at `offset` when known).

The rules follow qemu-img 7.2 for the formats both know:

- DATA extents: present, data, at their file offset. Where the data maps 1:1 onto the file
  (raw, fixed VHD: file offset == guest offset), the host file's holes under it are reported
  as zero too (qemu's block-status recursion into the protocol layer); `host_holes="all"`
  does that for every extent in a plain file (convert: no need to read what is a hole).
- ZERO extents (holes, unallocated blocks of a dynamic image): present and zero; raw holes
  keep their offset, as qemu's raw passthrough does.
- BACKING extents: decided by the backing image at depth + 1; without one (or past its end)
  not present and zero.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..extent import State
from ..image import Image

HostHoles = Literal["none", "identity", "all"]


@dataclass(slots=True)
class MapEntry:
    """One entry of qemu-img map's block status (its JSON members), and the layer it is from."""

    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: int | None  # host file offset of the data, when it is stored plainly
    image: Image  # the layer the entry comes from

    @property
    def end(self) -> int:
        return self.start + self.length

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start, "length": self.length, "depth": self.depth,
                               "present": self.present, "zero": self.zero, "data": self.data}
        if self.offset is not None:
            out["offset"] = self.offset
        return out

    def json_line(self) -> str:
        """The entry as qemu-img prints it (keys in its order, one line)."""
        b = {True: "true", False: "false"}
        text = (f'{{ "start": {self.start}, "length": {self.length}, "depth": {self.depth}, '
                f'"present": {b[self.present]}, "zero": {b[self.zero]}, "data": {b[self.data]}')
        if self.offset is not None:
            text += f', "offset": {self.offset}'
        return text + "}"


def block_status(image: Image, offset: int = 0, length: int | None = None, *,
                 host_holes: HostHoles = "identity") -> Iterator[MapEntry]:
    """Entries covering [offset, offset+length) of `image` (clipped to its size), in order."""
    end = image.size if length is None else min(image.size, offset + length)
    if offset < end:
        yield from _layer(image, 0, offset, end - offset, host_holes)


def _layer(image: Image, depth: int, offset: int, length: int, host_holes: HostHoles
           ) -> Iterator[MapEntry]:
    raw = image.engine.capabilities.identity_map
    if host_holes != "none" and not _has_holes(image):
        host_holes = "none"  # nothing to find: no lseek pair per extent
    for e in image.extents(offset, length):
        if e.state is State.DATA:
            yield from _data(image, depth, e.offset, e.length, e.file_offset, host_holes)
        elif e.state is State.ZERO:  # (preallocated zero clusters keep their offset)
            yield MapEntry(e.offset, e.length, depth, True, True, False,
                           e.offset if raw else e.file_offset, image)
        else:
            yield from _backing(image, depth, e.offset, e.length, host_holes, e.file_offset)


def file_fd(image: Image) -> int:
    """The descriptor of the plain file the image's DATA extents are in (the engine's data
    backend); -1 when there is none (a split VHD, an overlay, a backend in memory)."""
    fd = getattr(image.engine.data_backend, "fd", -1)
    return fd if isinstance(fd, int) and fd >= 0 else -1


def _has_holes(image: Image) -> bool:
    """Whether the image's file has a hole anywhere (True when that cannot be told)."""
    fd = file_fd(image)
    if fd < 0:
        return True
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < os.fstat(fd).st_size
    except OSError:
        return True


def _backing(image: Image, depth: int, offset: int, length: int, host_holes: HostHoles,
             file_offset: int | None = None) -> Iterator[MapEntry]:
    """`file_offset`: where the run has space in the image's file although it is not
    allocated (qcow2's unallocated subclusters of an allocated cluster): qemu shows it
    when there is no backing image."""
    backing = image.backing
    end = offset + length
    inside = min(end, backing.size) if backing is not None else offset
    if backing is not None and offset < inside:
        yield from _layer(backing, depth + 1, offset, inside - offset, host_holes)
    start = max(offset, inside)
    if start < end:  # no backing image, or past its end: unallocated, reads as zeros
        at = file_offset if backing is None else None
        yield MapEntry(start, end - start, depth, False, True, False, at, image)


def _data(image: Image, depth: int, offset: int, length: int, file_offset: int | None,
          host_holes: HostHoles) -> Iterator[MapEntry]:
    fd = file_fd(image)
    recurse = image.engine.map_recurse() if host_holes == "identity" else None
    refine = file_offset is not None and fd >= 0 and (
        host_holes == "all" or (host_holes == "identity" and (
            file_offset == offset if recurse is None else recurse)))
    if not refine or file_offset is None:
        yield MapEntry(offset, length, depth, True, False, True, file_offset, image)
        return
    for at, n, hole in host_runs(fd, file_offset, length):
        yield MapEntry(offset + at - file_offset, n, depth, True, hole, True, at, image)


def host_runs(fd: int, start: int, length: int) -> Iterator[tuple[int, int, bool]]:
    """(file offset, length, is_hole) runs of [start, start+length) of an open file."""
    pos, end = start, start + length
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no SEEK_DATA here: all data
                yield pos, end - pos, False
                return
            data = end  # a hole up to the end of the file
        if data > pos:
            stop = min(data, end)
            yield pos, stop - pos, True
            pos = stop
            continue
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        yield pos, hole - pos, False
        pos = hole


def mergeable(a: MapEntry, b: MapEntry) -> bool:
    """qemu-img map's rule: same attributes, same layer, contiguous host offsets."""
    if (a.zero, a.data, a.depth, a.present) != (b.zero, b.data, b.depth, b.present):
        return False
    if a.image is not b.image or (a.offset is None) != (b.offset is None):
        return False
    return a.offset is None or b.offset == a.offset + a.length


def merged(entries: Iterable[MapEntry]) -> Iterator[MapEntry]:
    current: MapEntry | None = None
    for e in entries:
        if current is not None and current.end == e.start and mergeable(current, e):
            current.length += e.length
            continue
        if current is not None:
            yield current
        current = MapEntry(e.start, e.length, e.depth, e.present, e.zero, e.data, e.offset, e.image)
    if current is not None:
        yield current


def allocation_runs(image: Image, offset: int = 0, length: int | None = None
                    ) -> Iterator[tuple[int, int, bool]]:
    """(start, length, zero) runs: the reduced view convert and compare need."""
    current: list[Any] | None = None
    for e in block_status(image, offset, length, host_holes="all"):
        if current is not None and current[2] == e.zero and current[0] + current[1] == e.start:
            current[1] += e.length
            continue
        if current is not None:
            yield current[0], current[1], current[2]
        current = [e.start, e.length, e.zero]
    if current is not None:
        yield current[0], current[1], current[2]
