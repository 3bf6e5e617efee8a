"""Moving guest data into a target image (convert's data path).

The sources' block status is cut into jobs of at most one chunk: zero runs are never read
(on a zero-initialised target they are not written either), data runs are read into one of
two preallocated buffers, scanned for all-zero pieces (qemu-img's -S) and written from the
buffer. While one buffer is scanned and written, a reader thread fills the other one with
the next job's positioned read (the system calls release the GIL, so reading and writing
overlap on two cores, as qemu-img's I/O threads do). Only reads at a known file offset are
prefetched: they touch nothing but the source file; other reads run through the engine on
the main thread. With nothing to scan (-S 0) between two plain files, data moves with
os.copy_file_range and never enters user space. When the target is to be flushed at the end,
its disk writes are started every 32 MiB copied (FileBackend.start_writeback), so that they
overlap the copy instead of all waiting for the final fsync.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .errors import DiskspecError
from .image import Image
from .mapping import MapEntry, block_status, merged
from .raw import RawEngine
from .sparse import ZeroScanner, data_runs
from .util import ZEROS

Progress = Callable[[int, int], None]
WRITEBACK_STEP = 32 << 20  # bytes copied between two writeback starts


@dataclass
class ConvertStats:
    size: int = 0  # guest bytes converted
    written: int = 0  # bytes written to the target
    skipped_zero: int = 0  # guest bytes not written because they read as zeros


@dataclass(slots=True)
class _Job:
    target: int  # guest offset in the target
    length: int
    entry: MapEntry  # the source run it comes from
    start: int  # guest offset in the source image
    direct: bool  # file to file in the kernel (copy_file_range), never through a buffer

    @property
    def buffered(self) -> bool:
        """Whether the job's data passes through one of the buffers."""
        return not (self.entry.zero or self.direct)


class Copier:
    """Copies the concatenated sources into `out`; `sparse_size` 0 writes every data byte
    (and, when `zero_target` is false, zero runs are written as zeros too)."""

    def __init__(self, out: Image, sparse_size: int, zero_target: bool, chunk: int,
                 stats: ConvertStats, progress: Progress | None = None, *, writeback: bool = False):
        self.out = out
        self.sparse = sparse_size if zero_target else 0
        self.zero_target = zero_target
        self.chunk = max(chunk, self.sparse, 512)
        self.buffers = [bytearray(), bytearray()]  # grown to the jobs' size when needed
        self.scanner = ZeroScanner(self.sparse, self.chunk) if self.sparse else None
        self.stats = stats
        self.progress = progress
        out_fd = getattr(out.engine.backend, "fd", -1)
        #: a raw target maps guest offsets 1:1 onto its file: data can go file to file
        self.out_fd = out_fd if isinstance(out.engine, RawEngine) and isinstance(out_fd, int) else -1
        #: start the disk writes of what was copied while copying goes on, so that the final
        #: fsync finds little left to do (Linux; a hint only, durability is still the fsync's)
        start = getattr(out.engine.backend, "start_writeback", None)
        self.start_writeback: Callable[[], None] | None = start if writeback else None
        self.unsynced = 0

    def run(self, sources: Sequence[Image]) -> None:
        total = self.stats.size
        if self.progress is not None:
            self.progress(0, total)
        with ThreadPoolExecutor(1, thread_name_prefix="diskspec-read") as reader:
            jobs = self._jobs(sources)
            job, k = next(jobs, None), 0
            pending = self._prefetch(reader, job, k)
            while job is not None:
                following = next(jobs, None)
                ahead = self._prefetch(reader, following, 1 - k)  # the other buffer
                self._do(job, pending, k)
                if self.progress is not None:
                    self.progress(job.target + job.length, total)
                job, pending, k = following, ahead, 1 - k

    def _jobs(self, sources: Sequence[Image]) -> Iterator[_Job]:
        base = 0
        for src in sources:
            for e in merged(block_status(src, host_holes="all")):
                # a zero run is one job; data in chunks (file-to-file copies in bigger ones,
                # so that progress still moves)
                direct = not e.zero and self._whole_range_copy(e)
                step = e.length if e.zero else self.chunk * (16 if direct else 1)
                for pos in range(e.start, e.end, step):
                    yield _Job(base + pos, min(step, e.end - pos), e, pos, direct)
            base += src.size

    def _whole_range_copy(self, e: MapEntry) -> bool:
        """Whether the run goes file to file in the kernel (nothing to scan, plain files)."""
        return (self.scanner is None and self.out_fd >= 0 and e.offset is not None
                and self._source_fd(e) >= 0)

    @staticmethod
    def _source_fd(e: MapEntry) -> int:
        fd = getattr(e.image.engine.backend, "fd", -1)
        return fd if isinstance(fd, int) else -1

    def _prefetch(self, reader: ThreadPoolExecutor, job: _Job | None, k: int) -> Future[None] | None:
        if job is None or not job.buffered or job.entry.offset is None:
            return None
        e = job.entry
        at = job.entry.offset + job.start - e.start
        return reader.submit(e.image.engine.backend.readinto, at, self._buffer(k, job.length))

    def _buffer(self, k: int, n: int) -> memoryview:
        """The first n bytes of buffer k. Buffers start empty and grow (up to the chunk size)
        only as far as the jobs need: zeroing 2 x 8 MiB up front costs more than small copies."""
        if len(self.buffers[k]) < n:  # a new object: a view of the old one may still exist
            self.buffers[k] = bytearray(max(n, min(self.chunk, 2 * len(self.buffers[k]))))
        return memoryview(self.buffers[k])[:n]

    def _do(self, job: _Job, pending: Future[None] | None, k: int) -> None:
        e = job.entry
        if e.zero:
            self.stats.skipped_zero += job.length
            if not self.zero_target:
                self._zero(job.target, job.length)
            return
        if job.direct:
            assert e.offset is not None
            self._copy_range(self._source_fd(e), e.offset + job.start - e.start, job.target, job.length)
            return
        view = self._buffer(k, job.length)  # at most one chunk: only buffered jobs get here
        if pending is not None:
            pending.result()  # the read's error, if any, is raised here
        else:
            e.image.read_at(job.start, view)
        write = self.out.engine.write
        for a, b in self._pieces(view, job.target):
            write(job.target + a, view[a:b])
            self._wrote(b - a)

    def _wrote(self, n: int) -> None:
        self.stats.written += n
        self.unsynced += n
        if self.start_writeback is not None and self.unsynced >= WRITEBACK_STEP:
            self.unsynced = 0
            self.start_writeback()

    def _pieces(self, view: memoryview, guest: int) -> list[tuple[int, int]]:
        """Runs [a, b) of the buffer to write: everything but the pieces of `sparse` bytes
        (aligned to the guest offset) that are all zero."""
        n = len(view)
        if self.scanner is None:
            return [(0, n)]
        buf = view.obj
        assert isinstance(buf, bytearray)
        zero = self.scanner.zero_runs(buf, n, (-guest) % self.sparse or self.sparse)
        self.stats.skipped_zero += sum(b - a for a, b in zero)
        return data_runs(zero, n)

    def _copy_range(self, src_fd: int, src: int, dst: int, length: int) -> None:
        out_fd = self.out_fd
        while length > 0:
            n = os.copy_file_range(src_fd, out_fd, length, src, dst)
            if n <= 0:  # the source file is shorter than its map says
                raise DiskspecError(f"short copy at source file offset {src}")
            src, dst, length = src + n, dst + n, length - n
            self._wrote(n)

    def _zero(self, offset: int, length: int) -> None:
        """Make [offset, offset+length) of an existing target read as zeros."""
        for e in block_status(self.out, offset, length, host_holes="all"):
            if e.zero:
                continue
            pos = e.start
            while pos < e.end:
                n = min(len(ZEROS), e.end - pos)
                self.out.engine.write(pos, ZEROS[:n])
                self._wrote(n)
                pos += n
