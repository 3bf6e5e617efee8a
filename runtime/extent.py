"""Extents: how a run of guest bytes is stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    DATA = "data"  # stored in this image at file_offset
    ZERO = "zero"  # reads as zeros (a hole, or a block marked zero)
    BACKING = "backing"  # not in this image: falls through to the backing file (zeros without one)


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of guest bytes and how it is stored."""

    offset: int  # guest offset
    length: int
    state: State
    file_offset: int | None = None  # for DATA

    @property
    def end(self) -> int:
        return self.offset + self.length


def merge(extents: list[Extent]) -> list[Extent]:
    """Join neighbours of the same state (and contiguous file offsets)."""
    out: list[Extent] = []
    for e in extents:
        if out:
            last = out[-1]
            contiguous = last.state == e.state and last.end == e.offset and (
                e.state is not State.DATA
                or (last.file_offset is not None and e.file_offset == last.file_offset + last.length))
            if contiguous:
                out[-1] = Extent(last.offset, last.length + e.length, last.state, last.file_offset)
                continue
        out.append(e)
    return out
