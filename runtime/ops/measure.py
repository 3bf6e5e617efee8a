"""Measure: the file size a new image needs (qemu-img measure's required / fully-allocated).

The answer comes from the target engine's own create and write code, on a sparse scratch
image in a temporary directory, so it is whatever `create` and `convert` really produce, for
every registered format: create the empty image, then allocate (one byte each) the clusters
the source holds data in -> "required"; then the remaining clusters -> "fully-allocated".
At most SIMULATED clusters are written; beyond that the growth per cluster over the last
half of the written ones is extrapolated (exact for formats that append fixed-size blocks).
Formats without clusters (raw, fixed images) need their created length whatever the data.

Like qemu-img, "data" means what the source's block status says is allocated and not zero;
convert may still skip all-zero runs inside it (-S), so "required" is an upper bound there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DiskspecError
from ..image import Image
from ..image import create as create_image
from ..util import ceil_div
from .mapping import block_status
from .report import files_of

#: clusters really allocated in the scratch image; more are extrapolated
SIMULATED = 1024


def data_clusters(source: Image, cluster: int) -> Iterator[int]:
    """Indices (ascending) of the `cluster`-sized clusters holding non-zero data of `source`."""
    last = -1
    for e in block_status(source, host_holes="all"):
        if e.zero:
            continue
        first = max(e.start // cluster, last + 1)
        stop = ceil_div(e.end, cluster)
        yield from range(first, stop)
        last = max(last, stop - 1)


def measure(fmt: str, options: dict[str, Any] | None = None, *, size: int | None = None,
            source: Image | None = None) -> dict[str, int]:
    """{"required": bytes, "fully-allocated": bytes} for a new `fmt` image of `size` bytes, or
    for converting `source` (exactly one of the two)."""
    if (size is None) == (source is None):
        raise DiskspecError("measure needs either --size or a source image")
    total = source.size if source is not None else size
    assert total is not None
    if total < 0:
        raise DiskspecError(f"invalid size {total}")
    with tempfile.TemporaryDirectory(prefix="diskspec-measure-") as tmp:
        scratch = create_image(Path(tmp) / "scratch", fmt, total, **dict(options or {}))
        try:
            scratch.engine.barriers = False
            return _simulate(scratch, source)
        finally:
            scratch.close(sync=False)  # a scratch file: nothing to make durable


def _length(image: Image) -> int:
    return sum(os.stat(p).st_size for p in files_of(image))


class _Growth:
    """Allocates clusters of the scratch image one by one and records the file length."""

    def __init__(self, scratch: Image, cluster: int):
        self.scratch = scratch
        self.cluster = cluster
        self.lengths = [_length(scratch)]  # after 0, 1, 2, ... allocations
        self.done: set[int] = set()
        self.one = memoryview(b"\x01")

    def allocate(self, index: int) -> bool:
        """Allocate cluster `index`; False once SIMULATED clusters were written."""
        if len(self.done) >= SIMULATED:
            return False
        if index not in self.done:
            self.scratch.engine.write(index * self.cluster, self.one)
            self.done.add(index)
            self.lengths.append(_length(self.scratch))
        return True

    def length_for(self, count: int) -> int:
        """File length with `count` clusters allocated (extrapolated past those written)."""
        n = len(self.lengths) - 1
        if count <= n:
            return self.lengths[count]
        half = n // 2
        slope = (self.lengths[n] - self.lengths[half]) / max(1, n - half)
        return self.lengths[n] + round((count - n) * slope)


def _simulate(scratch: Image, source: Image | None) -> dict[str, int]:
    cluster = scratch.engine.info().get("cluster-size")
    if not isinstance(cluster, int) or cluster <= 0:
        length = _length(scratch)
        return {"required": length, "fully-allocated": length}
    every = ceil_div(scratch.size, cluster)
    growth = _Growth(scratch, cluster)
    wanted = 0
    if source is not None:
        for index in data_clusters(source, cluster):
            if index >= every:
                break
            growth.allocate(index)
            wanted += 1
    required = growth.length_for(wanted)
    index = 0
    while index < every and growth.allocate(index):
        index += 1
    return {"required": required, "fully-allocated": growth.length_for(every)}
