"""The subset-crash model (after CrashMonkey and ALICE): record every pwrite, truncate and
flush a write session makes to the image file; then, at every crash point, keep what the
last completed flush made durable, and of the writes issued since, persist several random
subsets (a disk may keep any of them, in any order: writes are split at 4 KiB pages, the
unit a disk tears at). Each resulting file must open read-only and read-write, check clean
or be repaired by check, and read, sector by sector, the data of a guest write that was
flushed, and for a write not yet flushed either its old or its new data."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskspec.runtime as ds
from diskspec.runtime.backend import FileBackend
from diskspec.runtime.engine import CheckResult, Engine
from diskspec.runtime.errors import DiskspecError

from .kit import SECTOR, Built

PAGE = 4096


@dataclass(frozen=True)
class Op:
    kind: str  # "pwrite" | "truncate" | "flush"
    offset: int = 0  # pwrite: file offset; truncate: the new size
    data: bytes = b""


@contextmanager
def recording(target: Path) -> Iterator[list[Op]]:
    """Record what every FileBackend does to `target` (and still do it)."""
    real = target.resolve()
    ops: list[Op] = []
    pwrite, truncate, flush = FileBackend.pwrite, FileBackend.truncate, FileBackend.flush

    def ours(backend: FileBackend) -> bool:
        return backend.writable and backend.path.resolve() == real

    def rec_pwrite(self: FileBackend, offset: int, data: bytes | bytearray | memoryview) -> None:
        pwrite(self, offset, data)
        if ours(self):
            ops.append(Op("pwrite", offset, bytes(data)))

    def rec_truncate(self: FileBackend, size: int) -> None:
        truncate(self, size)
        if ours(self):
            ops.append(Op("truncate", size))

    def rec_flush(self: FileBackend) -> None:
        flush(self)
        if ours(self):
            ops.append(Op("flush"))

    FileBackend.pwrite, FileBackend.truncate, FileBackend.flush = (  # type: ignore[method-assign]
        rec_pwrite, rec_truncate, rec_flush)
    try:
        yield ops
    finally:
        FileBackend.pwrite, FileBackend.truncate, FileBackend.flush = (  # type: ignore[method-assign]
            pwrite, truncate, flush)


def apply(state: bytearray, op: Op) -> None:
    if op.kind == "pwrite":
        end = op.offset + len(op.data)
        if end > len(state):
            state.extend(bytes(end - len(state)))
        state[op.offset : end] = op.data
    elif op.kind == "truncate":
        if op.offset < len(state):
            del state[op.offset :]
        else:
            state.extend(bytes(op.offset - len(state)))


def pieces(op: Op) -> list[Op]:
    """A pwrite split at page boundaries of the file (truncates stay whole)."""
    if op.kind != "pwrite":
        return [op]
    out, pos, end = [], op.offset, op.offset + len(op.data)
    while pos < end:
        stop = min(end, (pos // PAGE + 1) * PAGE)
        out.append(Op("pwrite", pos, op.data[pos - op.offset : stop - op.offset]))
        pos = stop
    return out


# -- a session: guest writes (and flushes, and a resize) on an image, recorded ----------------

Step = tuple[str, int, bytes]  # ("write", offset, data) | ("flush", 0, b"") | ("resize", size, b"")


@dataclass
class Session:
    ops: list[Op]
    #: per step: (first op, end op) indexes of what it issued
    marks: list[tuple[int, int]]
    steps: list[Step]


def record(built: Built, steps: list[Step]) -> Session:
    marks = []
    with recording(built.path) as ops, built.open("r+") as image:
        for kind, arg, data in steps:
            start = len(ops)
            if kind == "write":
                image.seek(arg)
                image.write(data)
            elif kind == "flush":
                image.flush()
            else:
                image.engine.resize(arg)
            marks.append((start, len(ops)))
    return Session(list(ops), marks, steps)


# -- what a crash may leave -----------------------------------------------------------------


@dataclass
class Expectation:
    """Guest content a crash may leave: `durable` (every step flushed before the crash), and
    the steps in flight, each of which may or may not have reached the disk, sector by
    sector. A resize in flight allows the old and the new size."""

    durable: bytes
    sizes: set[int]
    in_flight: list[tuple[int, bytes]]  # (offset, data) of guest writes not yet durable

    def problems(self, got: bytes) -> Iterator[str]:
        if len(got) not in self.sizes:
            yield f"the disk is {len(got)} bytes, not one of {sorted(self.sizes)}"
            return
        base = self.durable[: len(got)].ljust(len(got), b"\0")
        if got == base:
            return
        # outside the writes in flight, the content is the durable one, exactly
        spans = sorted((o // PAGE * PAGE, -(-(o + len(d)) // PAGE) * PAGE) for o, d in self.in_flight)
        pos = 0
        for lo, hi in [*spans, (len(got), len(got))]:
            lo = min(lo, len(got))
            if pos < lo and got[pos:lo] != base[pos:lo]:
                bad = next(i for i in range(pos, lo) if got[i] != base[i])
                yield f"byte {bad} changed, outside every write in flight"
                return
            pos = max(pos, min(hi, len(got)))
        # inside: each sector is the durable one or that of one of the writes in flight
        # (alone or on top of the writes before it)
        versions = [base]
        cumulative = bytearray(base)
        for offset, data in self.in_flight:
            alone = bytearray(base)
            alone[offset : offset + len(data)] = data
            cumulative[offset : offset + len(data)] = data
            versions += [bytes(alone[: len(got)]), bytes(cumulative[: len(got)])]
        for lo, hi in spans:
            for s in range(lo, min(hi, len(got)), SECTOR):
                part = got[s : s + SECTOR]
                if not any(v[s : s + SECTOR] == part for v in versions):
                    yield f"guest sector at {s} is neither its old nor its new data"
                    return


def expectation(base: bytes, session: Session, kept: int, durable_ops: int) -> Expectation:
    """What may be read after a crash when `kept` ops were issued, the first `durable_ops` of
    them made durable by a flush."""
    state = bytearray(base)
    sizes = {len(base)}
    in_flight: list[tuple[int, bytes]] = []
    for (kind, arg, data), (start, end) in zip(session.steps, session.marks, strict=True):
        if start >= kept:
            break  # not issued yet
        durable = end <= durable_ops
        if kind == "write":
            if durable:
                state[arg : arg + len(data)] = data
            else:
                in_flight.append((arg, data))
        elif kind == "resize":
            new = bytes(state[:arg]).ljust(arg, b"\0")
            if durable:
                state = bytearray(new)
                sizes = {arg}
            else:
                sizes.add(arg)
                if arg > len(state):
                    state.extend(bytes(arg - len(state)))
    return Expectation(bytes(state), sizes, in_flight)


# -- replaying crashes ------------------------------------------------------------------------


def crash_images(original: bytes, session: Session, subsets: int, seed: int
                 ) -> Iterator[tuple[str, int, int, bytearray]]:
    """(label, kept ops, durable ops, file bytes) for every crash point and persisted subset."""
    rng = random.Random(seed)
    durable = bytearray(original)
    durable_ops = 0
    for kept in range(len(session.ops) + 1):
        if kept and session.ops[kept - 1].kind == "flush":
            for op in session.ops[durable_ops:kept]:
                apply(durable, op)
            durable_ops = kept
        pending = [p for op in session.ops[durable_ops:kept] if op.kind != "flush" for p in pieces(op)]
        choices: list[tuple[str, list[bool]]] = [("all", [True] * len(pending))]
        if pending:
            choices.append(("none", [False] * len(pending)))
            for k in range(subsets):
                choices.append((f"subset {k}", [rng.random() < 0.5 for _ in pending]))
        for label, keep in choices:
            state = bytearray(durable)
            for unit, chosen in zip(pending, keep, strict=True):
                if chosen:
                    apply(state, unit)
            yield (f"crash after {kept}/{len(session.ops)} ops, {label} of {len(pending)} pending",
                   kept, durable_ops, state)


def survey(built: Built, base: bytes, session: Session, original: bytes, subsets: int = 3,
           seed: int = 0) -> list[str]:
    """Every crash image of the session, opened and checked; returns the failures."""
    failures: list[str] = []
    # beside the image, so that its parent is found as the image finds it
    probe = built.path.with_name(f"crash-probe.{built.case.format}")
    for label, kept, durable_ops, state in crash_images(original, session, subsets, seed):
        probe.write_bytes(state)
        want = expectation(base, session, kept, durable_ops)
        try:
            problems = list(examine(built, probe, want))
        except (DiskspecError, AssertionError) as exc:
            problems = [f"{type(exc).__name__}: {str(exc)[:300]}"]
        failures += [f"{label}: {p}" for p in problems]
    return failures


def damaged(result: CheckResult | None) -> bool:
    """Corruption or an incomplete check (leaks are space lost, not data: allowed)."""
    return result is not None and bool(result.corruptions or result.check_errors)


def examine(built: Built, probe: Path, want: Expectation) -> Iterator[str]:
    """Open the crash image read-only and read-write: it reads as `want` allows, and check
    finds no corruption, or `check -r` repairs what it finds (leaks may remain)."""
    kwargs = built.open_kwargs
    fmt = built.case.format
    with ds.open(probe, format=fmt, **kwargs) as image:
        ro = image.read()
    yield from (f"read-only: {p}" for p in want.problems(ro))
    with ds.open(probe, "r+", format=fmt, **kwargs) as image:
        rw = image.read()
        if rw != ro:
            yield "the read-write open reads otherwise than the read-only one"
        result = image.engine.check() if built.case.caps.check else None
        if damaged(result):
            if not built.case.caps.repair:
                yield f"check: {result}"
                return
            image.engine.check(repair=True)
    if damaged(result):
        with ds.open(probe, format=fmt, **kwargs) as image:
            again = image.engine.check()
            if damaged(again):
                yield f"check -r did not repair: {result} -> {again}"
            after = image.read()
        yield from (f"after repair: {p}" for p in want.problems(after))


def run(built: Built, steps: list[Step], subsets: int = 3, seed: int = 0) -> list[str]:
    """Record `steps` on the image, then survey every crash point; returns the failures."""
    base = built.read()
    original = built.path.read_bytes()
    session = record(built, steps)
    return survey(built, base, session, original, subsets, seed)


@contextmanager
def barrier_removed(engine: type[Engine], caller: str) -> Iterator[None]:
    """The engine's barrier() does nothing when called from the method `caller` (a
    deliberately removed barrier, to show that the model notices)."""
    original = engine.barrier

    def barrier(self: Any) -> None:
        if sys._getframe(1).f_code.co_name != caller:
            original(self)

    engine.barrier = barrier  # type: ignore[method-assign]
    try:
        yield
    finally:
        engine.barrier = original  # type: ignore[method-assign]


def random_steps(rng: random.Random, size: int, count: int, longest: int = 1_300_000,
                 flushes: bool = True) -> list[Step]:
    """Guest writes (unaligned, across block boundaries, zeros, at the end), some flushes;
    first two short unaligned writes, flushed between, to neighbouring sectors: the second
    lands in a block the first allocated (partially present, in a child)."""
    at = rng.randrange(size - 4096)
    steps: list[Step] = [("write", at, rng.randbytes(700)), ("flush", 0, b""),
                         ("write", at + 1024, rng.randbytes(700))]
    for _ in range(count):
        offset = rng.randrange(size)
        length = min(size - offset, rng.choice([1, 511, 513, 4096, 4097, rng.randrange(1, longest)]))
        data = bytes(length) if rng.random() < 0.15 else rng.randbytes(length)
        steps.append(("write", offset, data))
        if flushes and rng.random() < 0.4:
            steps.append(("flush", 0, b""))
    return steps


