"""Moving guest data into a target image (convert's data path).

The sources' block status is cut into jobs of at most one chunk: zero runs are never read
(on a zero-initialised target they are not written either); data runs are read into a
buffer, scanned for all-zero pieces (qemu-img's -S) and written from the buffer.

Reads at a known file offset touch nothing but the source file, so a reader thread does
them ahead of the writes: consecutive such jobs are grouped into batches of up to one chunk,
each read into one of DEPTH buffers, and the reader runs up to DEPTH batches ahead of the
main thread (the system calls release the GIL, so reading and writing overlap on two cores,
as qemu-img's I/O threads do). Running ahead matters more than the overlap itself: waking a
sleeping thread costs up to a millisecond on a virtual machine, so a reader that is handed
one job at a time leaves the writer waiting at every job. Other reads run through the engine
on the main thread. With nothing to scan (-S 0) between two plain files, data moves with
os.copy_file_range and never enters user space. When the target is to be flushed at the end,
its disk writes are started every 32 MiB copied (FileBackend.start_writeback), so that they
overlap the copy instead of all waiting for the final fsync.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import DiskspecError
from ..image import Image
from ..util import ZEROS
from .mapping import MapEntry, block_status, file_fd, merged
from .sparse import ZeroScanner, data_runs
from .worker import Worker

Progress = Callable[[int, int], None]
WRITEBACK_STEP = 32 << 20  # bytes copied between two writeback starts
DEPTH = 3  # batches read ahead (and buffers of up to one chunk each)
LOOKAHEAD = 64  # at most this many jobs queued ahead of the one being written


@dataclass
class ConvertStats:
    """Byte counts of one convert."""

    size: int = 0  # guest bytes converted
    written: int = 0  # bytes written to the target
    skipped_zero: int = 0  # guest bytes not written because they read as zeros


@dataclass(slots=True)
class _Job:
    """One piece of the copy: at most one chunk of a source run, bound for the target."""

    target: int  # guest offset in the target
    length: int
    entry: MapEntry  # the source run it comes from
    start: int  # guest offset in the source image
    direct: bool  # file to file in the kernel (copy_file_range), never through a buffer

    @property
    def buffered(self) -> bool:
        """Whether the job's data passes through a buffer."""
        return not (self.entry.zero or self.direct)

    @property
    def file_offset(self) -> int | None:
        """Where the job's data lies in the source's file (None: only the engine knows)."""
        e = self.entry
        return None if e.offset is None else e.offset + self.start - e.start


@dataclass(slots=True)
class _Batch:
    """Buffered jobs with file offsets, read back to back into one buffer by the reader."""
    jobs: list[_Job] = field(default_factory=list)
    size: int = 0
    buffer: int = -1  # index into Copier.buffers, once submitted


def _spans(jobs: list[_Job], place: Callable[[_Job], tuple[object, int | None]]
           ) -> Iterator[tuple[_Job, int]]:
    """(first job, total length) of each run of jobs that follow each other without a gap,
    by `place(job)`: (what it lies in, compared by identity; offset there)."""
    k = 0
    while k < len(jobs):
        first = jobs[k]
        where, at = place(first)
        n = first.length
        k += 1
        while k < len(jobs) and at is not None:
            w, a = place(jobs[k])
            if w is not where or a != at + n:
                break
            n += jobs[k].length
            k += 1
        yield first, n


class Copier:
    """Copies the concatenated sources into `out`; `sparse_size` 0 writes every data byte
    (and, when `zero_target` is false, zero runs are written as zeros where `out` does not
    read as zeros already). `over_backing`: `out` has a backing file that holds what lies
    below the (one) source's top layer, so only the top layer is copied (qemu-img's -B)."""

    def __init__(self, out: Image, sparse_size: int, zero_target: bool, chunk: int,
                 stats: ConvertStats, progress: Progress | None = None, *, writeback: bool = False,
                 over_backing: bool = False):
        self.out = out
        self.over_backing = over_backing
        # all-zero pieces of data are looked for where leaving them out can work: skipped on a
        # target that reads as zeros, written over a backing file only where it shows through
        self.sparse = sparse_size if zero_target or over_backing else 0
        self.zero_target = zero_target
        self.chunk = max(chunk, self.sparse, 512)
        #: DEPTH buffers for the reader's batches, one for reads on the main thread; each
        #: grown to the size the jobs need
        self.buffers = [bytearray() for _ in range(DEPTH + 1)]
        self.scanner = ZeroScanner(self.sparse, self.chunk) if self.sparse else None
        self.stats = stats
        self.progress = progress
        #: a raw target maps guest offsets 1:1 onto its file: data can go file to file
        self.out_fd = file_fd(out) if out.engine.capabilities.identity_map else -1
        #: start the disk writes of what was copied while copying goes on, so that the final
        #: fsync finds little left to do (Linux; a hint only, durability is still the fsync's)
        start = getattr(out.engine.backend, "start_writeback", None)
        self.start_writeback: Callable[[], None] | None = start if writeback else None
        self.unsynced = 0

    def run(self, sources: Sequence[Image]) -> None:
        total = self.stats.size
        if self.progress is not None:
            self.progress(0, total)
        units = self._units(sources)
        ahead: deque[_Job | _Batch] = deque()
        free = list(range(DEPTH))  # buffers no batch is using
        reader: Worker[bytearray] = Worker("diskspec-read")  # batches' reads, in order
        try:
            more = True
            while True:
                while more and free and len(ahead) < LOOKAHEAD:  # keep the reader busy
                    unit = next(units, None)
                    if unit is None:
                        more = False
                    else:
                        if isinstance(unit, _Batch):
                            unit.buffer = free.pop()
                            reader.submit(functools.partial(self._read_batch, unit,
                                                            self.buffers[unit.buffer]))
                        ahead.append(unit)
                if not ahead:
                    break
                unit = ahead.popleft()
                if isinstance(unit, _Batch):
                    self._write_batch(unit, reader.result())  # or the read's error
                    free.append(unit.buffer)
                    last = unit.jobs[-1]
                else:
                    self._do(unit)
                    last = unit
                if self.progress is not None:
                    self.progress(last.target + last.length, total)
        finally:  # after a failure, reads not yet started are dropped
            reader.close()

    def _units(self, sources: Sequence[Image]) -> Iterator[_Job | _Batch]:
        """The jobs in order, runs of reads at file offsets grouped into batches."""
        batch = _Batch()
        for job in self._jobs(sources):
            if job.buffered and job.file_offset is not None:
                if batch.jobs and batch.size + job.length > self.chunk:
                    yield batch
                    batch = _Batch()
                batch.jobs.append(job)
                batch.size += job.length
                continue
            if batch.jobs:
                yield batch
                batch = _Batch()
            yield job
        if batch.jobs:
            yield batch

    def _jobs(self, sources: Sequence[Image]) -> Iterator[_Job]:
        base = 0
        for src in sources:
            for e in merged(block_status(src, host_holes="all")):
                if self.over_backing and e.depth > 0:
                    continue  # from the source's backing: the target's backing has it
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
                and file_fd(e.image) >= 0)

    def _read_batch(self, batch: _Batch, buf: bytearray) -> bytearray:
        """Runs in the reader thread: the batch's data, back to back into `buf` (or into a
        bigger buffer, returned: the first touch of new memory costs more than the copy, so
        it is paid here rather than in the writer's time). Jobs that follow each other in
        the same file are one read."""
        buf = self._grown(buf, batch.size)
        view = memoryview(buf)
        pos = 0
        for first, n in _spans(batch.jobs, lambda j: (j.entry.image.engine.data_backend,
                                                      j.file_offset)):
            at = first.file_offset
            assert at is not None
            first.entry.image.engine.data_backend.readinto(at, view[pos : pos + n])
            pos += n
        return buf

    def _buffer(self, n: int) -> memoryview:
        """The first n bytes of the main thread's buffer."""
        buf = self.buffers[DEPTH] = self._grown(self.buffers[DEPTH], n)
        return memoryview(buf)[:n]

    def _grown(self, buf: bytearray, n: int) -> bytearray:
        """`buf`, or if it is shorter than n a new one (never resized in place: a view of the
        old one may still exist) of at least n bytes, doubling up to the chunk size: buffers
        grow only as far as the jobs need."""
        return buf if len(buf) >= n else bytearray(max(n, min(self.chunk, 2 * len(buf))))

    def _write_batch(self, batch: _Batch, buf: bytearray) -> None:
        self.buffers[batch.buffer] = buf  # the reader may have grown it
        pos = 0
        for first, n in _spans(batch.jobs, lambda j: (None, j.target)):
            self._write_span(buf, pos, n, first.target)
            pos += n

    def _do(self, job: _Job) -> None:
        """A job the reader does not read: a zero run, a file-to-file copy, or a read through
        the engine (data whose place in the file only the engine knows)."""
        e = job.entry
        if e.zero:
            written = 0 if self.zero_target else self._zero(job.target, job.length)
            self.stats.skipped_zero += job.length - written
            return
        if job.direct:
            at = job.file_offset
            assert at is not None
            self._copy_range(file_fd(e.image), at, job.target, job.length)
            return
        view = self._buffer(job.length)  # at most one chunk: only buffered jobs get here
        e.image.read_at(job.start, view)
        self._write_span(self.buffers[DEPTH], 0, job.length, job.target)

    def _write_span(self, buf: bytearray, base: int, n: int, target: int) -> None:
        """Write buf[base:base+n] at guest offset `target`, but for the pieces of `sparse`
        bytes (aligned to the guest offset) that are all zero."""
        runs = [(0, n)]
        if self.scanner is not None:
            zero = self.scanner.zero_runs(buf, n, (-target) % self.sparse or self.sparse, base)
            written = 0 if self.zero_target else sum(self._zero(target + a, b - a) for a, b in zero)
            self.stats.skipped_zero += sum(b - a for a, b in zero) - written
            runs = data_runs(zero, n)
        view = memoryview(buf)
        write = self.out.engine.write
        for a, b in runs:
            write(target + a, view[base + a : base + b])
            self._wrote(b - a)

    def _wrote(self, n: int) -> None:
        self.stats.written += n
        self.unsynced += n
        if self.start_writeback is not None and self.unsynced >= WRITEBACK_STEP:
            self.unsynced = 0
            self.start_writeback()

    def _copy_range(self, src_fd: int, src: int, dst: int, length: int) -> None:
        out_fd = self.out_fd
        while length > 0:
            n = os.copy_file_range(src_fd, out_fd, length, src, dst)
            if n <= 0:  # the source file is shorter than its map says
                raise DiskspecError(f"short copy at source file offset {src}")
            src, dst, length = src + n, dst + n, length - n
            self._wrote(n)

    def _zero(self, offset: int, length: int) -> int:
        """Make [offset, offset+length) of the target read as zeros, writing zeros only where
        it does not already (through its backing file, too); returns the bytes written."""
        written = 0
        for e in block_status(self.out, offset, length, host_holes="all"):
            if e.zero:
                continue
            pos = e.start
            while pos < e.end:
                n = min(len(ZEROS), e.end - pos)
                self.out.engine.write(pos, ZEROS[:n])
                self._wrote(n)
                pos += n
            written += e.length
        return written
