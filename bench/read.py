"""Read speed and memory: diskspec against the raw file and other VHD readers, in one run.

Creates in a temporary directory (with diskspec's own create/write, whole blocks at a time):
  half   a dynamic VHD with a random half of its 2 MiB blocks allocated (random data)
  full   a dynamic VHD with every block allocated
  fixed  a fixed VHD, all data
  half32M, full32M, half1M, full1M   the same as dynamic VHDX with 32 MiB / 1 MiB blocks: half
         is a random half of the image's own blocks, each written whole (so a 32 MiB-block
         image is half allocated, not touched in nearly every block by small pieces)
  fixed32M   a fixed VHDX, all data
  limit.raw  a raw file of the same size, fully allocated (random data written everywhere; a
         sparse file reads slower, which would flatter the ratios)
then measures, for every image and reader, MB/s of sequential 1 MiB reads over the whole disk
and reads/s of random 4 KiB reads (4 KiB aligned, fixed seed), best and median of 3 runs each
(fewer when the runs so far took --budget seconds: pyvhdi), readers taking turns, the page
cache warmed before each round; the limit's readers are measured again in each image's
rounds. Before timing, every reader reads its whole disk once and the sha256 of what it read
must equal that of the content written (tracked while creating the image). Readers:
  raw loop    os.preadv into one buffer (sequential) / os.pread (random) over limit.raw:
              the physical limit here
  raw preadv  the same with preadv into one 4 KiB buffer for the random reads too
  diskspec    diskspec.runtime.open(): seek + readinto into a preallocated buffer
  ds read_at  the same image's positioned API, Image.read_at(offset, memoryview)
  dissect     dissect.hypervisor.disk.vhd.VHD (vhdx.VHDX) over open(path, "rb"): seek + read
  pyvhdi      libvhdi's Python binding (it opens VHDX too): read_buffer / read_buffer_at_offset
Then: peak RSS of opening a sparse ~2 TiB dynamic VHD and reading a few MiB from it (each
reader in its own subprocess), open times against BAT size, and `qemu-img convert` speed
against a plain file copy, and the read-only open of a VHDX whose 1 MiB log is full of entries
to replay (a session cut off before its clean close).

Run: bash bench/setup.sh && python bench/read.py [--size 64M] [--reads 100000] [--formats vhd,vhdx]
Goals (issue 3): sequential >= 90% of the raw loop; random 4 KiB >= 50% of raw os.pread and
>= 2x dissect.hypervisor; peak RSS < 100 MB for a sparse 2 TiB dynamic VHD; open time in
proportion to metadata; a read-only open replaying a full 1 MiB VHDX log < 50 ms. Nothing here
asserts a time; it prints ratios (of the best times, then of the medians).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib
import json
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import runs, warm

import diskspec.runtime as ds

if TYPE_CHECKING:
    from diskspec.runtime.engines.vhdx.engine import VhdxEngine

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 2 * MiB
SEQ = 1 * MiB
RND = 4 * KiB
SEED = 20240603
CHUNK = 64 * MiB  # bytes per write call when creating images
#: VHD's largest size (0xFF000000 sectors, 2040 GiB): "sparse 2 TiB" below
HUGE = 0xFF000000 * 512

GOAL_SEQ_RAW = 0.90
GOAL_RND_RAW = 0.50
GOAL_RND_DISSECT = 2.0
GOAL_RSS_MB = 100.0
GOAL_REPLAY_MS = 50.0


def optional(module: str) -> Any:
    """The module, or None when the bench extras are not installed (bench/setup.sh)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# -- images --------------------------------------------------------------------------------

@dataclass
class Pair:
    name: str
    vhd: Path  # the image (VHD or VHDX)
    raw: Path  # the limit: a fully allocated raw file of the same size
    size: int
    allocated: int  # blocks
    sha: str  # sha256 of the image's guest content
    raw_sha: str  # sha256 of the limit's content
    fmt: str = "vpc"
    subformat: str = "dynamic"

    @property
    def ext(self) -> str:
        return "vhd" if self.fmt == "vpc" else self.fmt


def hash_zeros(h: Any, length: int) -> None:
    zeros = bytes(min(length, CHUNK))
    while length > 0:
        h.update(zeros[: min(length, len(zeros))])
        length -= len(zeros)


def pieces(rng: random.Random, pool: bytes, start: int, length: int) -> Any:
    """(offset, data) covering [start, start + length) in pieces of at most CHUNK, each a
    window of the random pool at a random place (distinct data per piece)."""
    for at in range(start, start + length, CHUNK):
        n = min(CHUNK, start + length - at)
        p = rng.randrange(0, len(pool) - n + 1, 512)
        yield at, memoryview(pool)[p : p + n]


def make_limit(tmp: Path, size: int, rng: random.Random, pool: bytes) -> tuple[Path, str]:
    """limit.raw, written everywhere (no holes), and its sha256."""
    path, h = tmp / "limit.raw", hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for at, data in pieces(rng, pool, 0, size):
            os.pwrite(fd, data, at)
            h.update(data)
    finally:
        os.close(fd)
    if path.stat().st_blocks * 512 < size:
        sys.exit(f"{path} is not fully allocated ({path.stat().st_blocks * 512} of {size} bytes)")
    return path, h.hexdigest()


def make_pair(tmp: Path, name: str, size: int, blocks: list[int], rng: random.Random,
              pool: bytes, limit: tuple[Path, str], fmt: str = "vpc", block_size: int = BLOCK,
              subformat: str = "dynamic") -> Pair:
    """An image with `blocks` (of block_size) written whole, in sorted order, and the sha256
    of its guest content."""
    vhd_path = tmp / f"{name}.{'vhd' if fmt == 'vpc' else fmt}"
    if fmt == "vpc":
        extra: dict[str, Any] = {"block_size": block_size} if subformat == "dynamic" else {}
        vhd = ds.create(vhd_path, "vpc", size, subformat=subformat, force_size=True, **extra)
    else:
        vhd = ds.create(vhd_path, fmt, size, subformat=subformat, block_size=block_size)
    h, done = hashlib.sha256(), 0
    try:
        assert vhd.size == size, (vhd.size, size)
        for first, count in runs(blocks, len(blocks) or 1):
            start = first * block_size
            hash_zeros(h, start - done)
            for at, data in pieces(rng, pool, start, count * block_size):
                vhd.seek(at)
                vhd.write(data)
                h.update(data)
            done = start + count * block_size
        hash_zeros(h, size - done)
    finally:
        vhd.close()
    return Pair(name, vhd_path, limit[0], size, len(blocks), h.hexdigest(), limit[1], fmt, subformat)


def make_images(tmp: Path, size: int, formats: list[str]) -> list[Pair]:
    """The VHD images, then the VHDX ones (32 MiB, 1 MiB blocks), all against one fully
    allocated raw limit; half = a random half of the image's own blocks, written whole."""
    rng = random.Random(SEED)
    pool = rng.randbytes(min(CHUNK, size) + 16 * MiB)
    limit = make_limit(tmp, size, rng, pool)

    def half(block: int) -> list[int]:
        n = size // block
        return sorted(rng.sample(range(n), n // 2))

    def every(block: int) -> list[int]:
        return list(range(size // block))

    out = []
    if "vhd" in formats:
        out += [make_pair(tmp, "half", size, half(BLOCK), rng, pool, limit),
                make_pair(tmp, "full", size, every(BLOCK), rng, pool, limit),
                make_pair(tmp, "fixed", size, every(BLOCK), rng, pool, limit, subformat="fixed")]
    if "vhdx" in formats:
        for bs in (32 * MiB, MiB):
            tag = f"{bs // MiB}M"
            out += [make_pair(tmp, f"half{tag}", size, half(bs), rng, pool, limit, "vhdx", bs),
                    make_pair(tmp, f"full{tag}", size, every(bs), rng, pool, limit, "vhdx", bs)]
        out.append(make_pair(tmp, "fixed32M", size, every(32 * MiB), rng, pool, limit, "vhdx",
                             32 * MiB, "fixed"))
    return out


def make_huge(tmp: Path) -> Path:
    """A sparse 2040 GiB dynamic VHD (4 MiB BAT) with four blocks allocated."""
    path = tmp / "huge.vhd"
    with ds.create(path, "vpc", HUGE, subformat="dynamic", block_size=BLOCK, force_size=True) as img:
        data = random.Random(SEED + 1).randbytes(BLOCK)
        for at in huge_blocks():
            img.seek(at)
            img.write(data)
    return path


def huge_blocks() -> list[int]:
    return [0, HUGE // 3 // BLOCK * BLOCK, HUGE // 2 // BLOCK * BLOCK, HUGE - BLOCK]


# -- readers -------------------------------------------------------------------------------

class Reader:
    """One reader over one image: a sequential pass and a batch of random reads."""

    name = ""

    def seq(self, size: int) -> None:
        raise NotImplementedError

    def rnd(self, offsets: list[int]) -> None:
        raise NotImplementedError

    def read(self, offset: int, length: int) -> bytes:
        """For the correctness check (not timed)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RawLoop(Reader):
    name = "raw loop"

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)

    def seq(self, size: int) -> None:
        fd, preadv, buf = self.fd, os.preadv, [bytearray(SEQ)]
        for off in range(0, size, SEQ):
            preadv(fd, buf, off)

    def rnd(self, offsets: list[int]) -> None:
        fd, pread = self.fd, os.pread
        for off in offsets:
            pread(fd, RND, off)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


class RawPreadv(RawLoop):
    """The raw loop's random reads with preadv into one buffer (as diskspec's readinto)."""

    name = "raw preadv"

    def rnd(self, offsets: list[int]) -> None:
        fd, preadv, buf = self.fd, os.preadv, [bytearray(RND)]
        for off in offsets:
            preadv(fd, buf, off)


class Diskspec(Reader):
    name = "diskspec"

    def __init__(self, path: Path):
        self.img = ds.open(path)

    def seq(self, size: int) -> None:
        img = self.img
        img.seek(0)
        readinto, buf = img.readinto, bytearray(SEQ)
        for _ in range(size // SEQ):
            readinto(buf)

    def rnd(self, offsets: list[int]) -> None:
        seek, readinto, buf = self.img.seek, self.img.readinto, bytearray(RND)
        for off in offsets:
            seek(off)
            readinto(buf)

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.img.seek(offset)
        n = self.img.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        self.img.close()


class DiskspecAt(Diskspec):
    """diskspec's positioned API (Image.read_at: no seek, no file position)."""

    name = "ds read_at"

    def seq(self, size: int) -> None:
        read_at, view = self.img.read_at, memoryview(bytearray(SEQ))
        for off in range(0, size, SEQ):
            read_at(off, view)

    def rnd(self, offsets: list[int]) -> None:
        read_at, view = self.img.read_at, memoryview(bytearray(RND))
        for off in offsets:
            read_at(off, view)

    def read(self, offset: int, length: int) -> bytes:
        view = memoryview(bytearray(length))
        self.img.read_at(offset, view)
        return bytes(view)


class Dissect(Reader):
    name = "dissect"

    def __init__(self, path: Path, cls: Any):
        """cls: dissect.hypervisor's VHD or VHDX class (a file-like stream over fh)."""
        self.fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.vhd = cls(self.fh)

    def seq(self, size: int) -> None:
        vhd = self.vhd
        vhd.seek(0)
        read = vhd.read
        for _ in range(size // SEQ):
            read(SEQ)

    def rnd(self, offsets: list[int]) -> None:
        seek, read = self.vhd.seek, self.vhd.read
        for off in offsets:
            seek(off)
            read(RND)

    def read(self, offset: int, length: int) -> bytes:
        self.vhd.seek(offset)
        data: bytes = self.vhd.read(length)
        return data

    def close(self) -> None:
        self.fh.close()


class Pyvhdi(Reader):
    name = "pyvhdi"

    def __init__(self, path: Path, module: Any):
        self.f = module.file()
        self.f.open(str(path))

    def seq(self, size: int) -> None:
        f = self.f
        f.seek_offset(0, os.SEEK_SET)
        read = f.read_buffer
        for _ in range(size // SEQ):
            read(SEQ)

    def rnd(self, offsets: list[int]) -> None:
        read_at = self.f.read_buffer_at_offset
        for off in offsets:
            read_at(RND, off)

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.f.read_buffer_at_offset(length, offset)
        return data

    def close(self) -> None:
        self.f.close()


def dissect_class(fmt: str) -> Any:
    """dissect.hypervisor's reader class for fmt ("vpc" or "vhdx"), or None."""
    if fmt == "vhdx":
        module = optional("dissect.hypervisor.disk.vhdx")
        return None if module is None else module.VHDX
    module = optional("dissect.hypervisor.disk.vhd")
    return None if module is None else module.VHD


def readers_for(path: Path, fmt: str) -> list[Callable[[], Reader]]:
    """fmt: "raw", "vpc" or "vhdx"."""
    if fmt == "raw":
        return [lambda: RawLoop(path), lambda: RawPreadv(path), lambda: Diskspec(path)]
    out: list[Callable[[], Reader]] = [lambda: Diskspec(path), lambda: DiskspecAt(path)]
    dissect = dissect_class(fmt)
    if dissect is not None:
        out.append(lambda: Dissect(path, dissect))
    pyvhdi = optional("pyvhdi")
    if pyvhdi is not None:
        out.append(lambda: Pyvhdi(path, pyvhdi))
    return out


# -- measuring -----------------------------------------------------------------------------

@dataclass
class Row:
    image: str
    reader: str
    seq: float  # MB/s (10^6 bytes), best
    rnd: float  # reads/s, best
    ok: bool  # the whole disk read has the content's sha256
    seq_runs: int
    rnd_runs: int
    seq_med: float = 0.0  # MB/s, median
    rnd_med: float = 0.0  # reads/s, median


def best(runs: int, fn: Callable[..., object], *args: Any) -> float:
    """The shortest of `runs` timed calls of fn(*args)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def digest(reader: Reader, size: int) -> str:
    """sha256 of the whole disk as the reader reads it (1 MiB reads; not timed)."""
    h = hashlib.sha256()
    for off in range(0, size, SEQ):
        h.update(reader.read(off, min(SEQ, size - off)))
    return h.hexdigest()


def measure(pairs: list[Pair], reads: int, runs_: int, budget: float) -> list[Row]:
    """Every reader of a pair once per round (so that this noisy machine's drift hits them
    alike), the page cache warmed before each round: this machine's DAMON pages out page
    cache left idle for ~30 s. A reader stops repeating once its runs took `budget` s."""
    rows: list[Row] = []
    for pair in pairs:
        rng = random.Random(SEED + 3)
        offsets = [rng.randrange(0, pair.size // RND) * RND for _ in range(reads)]
        readers: list[tuple[str, Reader]] = []
        want: list[str] = []
        try:
            # the raw loop first after each warm-up: the limit is measured at its cleanest
            for path, fmt, kind, sha in ((pair.raw, "raw", "raw", pair.raw_sha),
                                         (pair.vhd, pair.fmt, pair.ext, pair.sha)):
                made = [(f"{pair.name} {kind}", make()) for make in readers_for(path, fmt)]
                readers += made
                want += [sha] * len(made)
            ok = [digest(reader, pair.size) == sha for (_, reader), sha in zip(readers, want, strict=True)]
            times: dict[str, list[list[float]]] = {"seq": [[] for _ in readers], "rnd": [[] for _ in readers]}
            for _ in range(runs_):
                for what, arg in (("seq", pair.size), ("rnd", offsets)):
                    warm(pair.vhd)
                    warm(pair.raw)
                    for spent, (_, reader) in zip(times[what], readers, strict=True):
                        if sum(spent) < budget:
                            call: Callable[[Any], None] = getattr(reader, what)
                            t = time.perf_counter()
                            call(arg)
                            spent.append(time.perf_counter() - t)
            for i, (label, reader) in enumerate(readers):
                seq, rnd = times["seq"][i], times["rnd"][i]
                rows.append(Row(label, reader.name, pair.size / min(seq) / 1e6, reads / min(rnd), ok[i],
                                len(seq), len(rnd), pair.size / statistics.median(seq) / 1e6,
                                reads / statistics.median(rnd)))
                print(f"  {label:12} {reader.name:10} {rows[-1].seq:9.0f} MB/s "
                      f"{rows[-1].rnd:9.0f} reads/s", file=sys.stderr, flush=True)
        finally:
            for _, reader in readers:
                reader.close()
    return rows


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "-"


def ratios(r: Row, ref: Row | None, what: str) -> str:
    """best/median ratio of r to ref in `what` ("seq" or "rnd")."""
    if ref is None:
        return "-"
    best = ratio(getattr(r, what), getattr(ref, what))
    return f"{best}/{ratio(getattr(r, what + '_med'), getattr(ref, what + '_med'))}"


def goal(value: float | None, want: float) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}>={want:g} {'ok' if value >= want else 'MISS'}"


def print_table(rows: list[Row], runs_: int) -> None:
    """Ratios (best/median) against the raw loop over the fully allocated limit (sequential:
    preadv; random: os.pread) and against dissect on the same VHD/VHDX image."""
    by = {(r.image, r.reader): r for r in rows}
    image_of = {r.image.split()[0]: r.image for r in rows if not r.image.endswith(" raw")}
    head = (f"{'image':13}  {'reader':10}  {'seq MB/s':>8} {'median':>6}  {'rnd reads/s':>11} {'median':>7}  "
            f"{'seq/raw':>9}  {'rnd/raw':>9}  {'seq/dis':>9}  {'rnd/dis':>9}  goals (diskspec, best)")
    print(head)
    print("-" * len(head))
    for r in rows:
        kind = r.image.split()[0]
        raw = by.get((f"{kind} raw", "raw loop"))
        dis = by.get((image_of.get(kind, ""), "dissect"))
        cols = [ratios(r, raw, "seq"), ratios(r, raw, "rnd"), ratios(r, dis, "seq"), ratios(r, dis, "rnd")]
        goals = ""
        if r.reader in ("diskspec", DiskspecAt.name) and not r.image.endswith(" raw"):
            goals = "  ".join([
                "seq/raw " + goal(r.seq / raw.seq if raw else None, GOAL_SEQ_RAW),
                "rnd/raw " + goal(r.rnd / raw.rnd if raw else None, GOAL_RND_RAW),
                "rnd/dis " + goal(r.rnd / dis.rnd if dis else None, GOAL_RND_DISSECT)])
        goals = ("sha256 ok  " if r.ok else "WRONG DATA  ") + goals
        print(f"{r.image:13}  {r.reader:10}  {r.seq:8.0f} {r.seq_med:6.0f}  {r.rnd:11.0f} {r.rnd_med:7.0f}  "
              + "  ".join(f"{c:>9}" for c in cols) + f"  {goals}".rstrip())
    for r in rows:
        if (r.seq_runs, r.rnd_runs) != (runs_, runs_):
            print(f"({r.image} {r.reader}: seq best of {r.seq_runs}, rnd best of {r.rnd_runs} "
                  "run(s): over the --budget)")


# -- memory and open time ------------------------------------------------------------------

def child_rss(reader: str, path: str) -> None:
    """In a subprocess: import, open `path`, read a few MiB; print JSON of times and RSS."""
    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    spots = [*huge_blocks(), HUGE // 7 // RND * RND]
    if reader == "diskspec":
        tiny = Path(path).with_name("half.vhd")
        if tiny.exists():
            ds.open(tiny).close()  # first open pays for lazy imports; not what is measured
        base = rss_mb()
        t = time.perf_counter()
        img: Any = ds.open(path)
        opened = time.perf_counter() - t
        buf = bytearray(MiB)
        for at in spots:
            img.seek(at)
            img.readinto(buf)
        img.close()
    elif reader == "dissect":
        module = importlib.import_module("dissect.hypervisor.disk.vhd")
        base = rss_mb()
        t = time.perf_counter()
        fh = open(path, "rb")  # noqa: SIM115
        vhd = module.VHD(fh)
        opened = time.perf_counter() - t
        for at in spots:
            vhd.seek(at)
            vhd.read(MiB)
        fh.close()
    else:
        module = importlib.import_module("pyvhdi")
        base = rss_mb()
        t = time.perf_counter()
        f = module.file()
        f.open(path)
        opened = time.perf_counter() - t
        for at in spots:
            f.read_buffer_at_offset(MiB, at)
        f.close()
    with open("/proc/self/status") as status:  # cross-check: the kernel's own peak of this mm
        hwm = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")), -1.0)
    print(json.dumps({"base": base, "peak": rss_mb(), "open": opened, "hwm": hwm}))


def memory(huge: Path) -> list[tuple[str, float, float, float, float]]:
    out = []
    names = ["diskspec"] + [n for n, m in (("dissect", "dissect.hypervisor"), ("pyvhdi", "pyvhdi"))
                            if optional(m) is not None]
    for name in names:
        # through sh, which forks: a process exec'ed straight from this one would inherit this
        # process's peak as the floor of its own ru_maxrss (Linux keeps it across exec)
        cmd = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, __file__, "--rss-child", name, str(huge)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append((name, got["base"], got["peak"], got["open"], got["hwm"]))
    return out


def open_times(paths: list[tuple[str, Path]], runs_: int) -> list[tuple[str, str, float]]:
    """Best-of time to open (and close) each image, per reader."""
    dissect = dissect_class("vpc")
    pyvhdi = optional("pyvhdi")
    out = []
    for label, path in paths:
        ds.open(path).close()
        out.append((label, "diskspec", best(runs_, lambda p: ds.open(p).close(), path)))
        if dissect is not None:
            out.append((label, "dissect", best(runs_, lambda p: Dissect(p, dissect).close(), path)))
        if pyvhdi is not None:
            out.append((label, "pyvhdi", best(runs_, lambda p: Pyvhdi(p, pyvhdi).close(), path)))
    return out


# -- convert -------------------------------------------------------------------------------

def run_to(cmd: list[str], dst: Path) -> None:
    dst.unlink(missing_ok=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def convert(pairs: list[Pair], runs_: int) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    qemu = shutil.which("qemu-img")
    for pair in pairs:
        dst = pair.vhd.with_name("converted.raw")

        warm(pair.vhd)
        warm(pair.raw)
        if qemu:
            cmd = [qemu, "convert", "-f", "vpc", "-O", "raw", str(pair.vhd), str(dst)]
            t = best(runs_, run_to, cmd, dst)
            out.append((pair.name, "qemu-img convert -f vpc -O raw", pair.size / t / 1e6))
        t = best(runs_, run_to, ["cp", "--reflink=never", str(pair.raw), str(dst)], dst)
        out.append((pair.name, "cp of the raw limit (allocated)", pair.size / t / 1e6))
        dst.unlink(missing_ok=True)
    return out


# -- VHDX log replay -----------------------------------------------------------------------

def vhdx_engine(image: ds.Image) -> VhdxEngine:
    """The image's engine, which the replay bench reaches into: a VHDX one."""
    from diskspec.runtime.engines.vhdx.engine import VhdxEngine

    assert isinstance(image.engine, VhdxEngine)
    return image.engine


def abandon(image: ds.Image) -> None:
    """A crash, as tests/test_vhdx_engine.py makes one: the engine's descriptor is closed as it
    is (no flush, no clean header, the log still marked in use); the Image is retired."""
    from diskspec.runtime.backend import FileBackend

    engine = vhdx_engine(image)
    backend = engine.file_backend
    assert isinstance(backend, FileBackend)
    os.close(backend.fd)
    backend.fd = -1
    backend.writable = False
    engine.session_started = False
    image.close()


def make_dirty(tmp: Path) -> tuple[Path, int, dict[int, bytes]]:
    """A VHDX (1 MiB log, 1 MiB blocks) whose log is full of entries still to replay: a session
    of single-page writes, each into a new block (one BAT-page log entry each), with every
    entry's tail held at the session's first entry (so all of them form the active sequence,
    as when the writer never recorded them applied), then a crash. Returns (path, entries,
    {offset: data written})."""
    from diskspec.runtime.engines.vhdx import log as vlog

    path = tmp / "dirty.vhdx"
    rng = random.Random(SEED + 4)
    ds.create(path, "vhdx", 4 * GiB, block_size=MiB, log_size=MiB).close()
    original = vlog.build_entry

    def tail_at_start(sequence: int, tail: int, log_guid: bytes, flushed: int, last: int,
                      writes: list[tuple[int, bytes]]) -> bytes:
        return original(sequence, 0, log_guid, flushed, last, writes)

    written: dict[int, bytes] = {}
    image = ds.open(path, "r+")
    vlog.build_entry = tail_at_start
    try:
        engine = vhdx_engine(image)
        block = 0
        while True:
            # stop before the ring would wrap (an entry here: 4 KiB descriptors + 4 KiB page)
            if engine.session_started and engine.log_head + 3 * RND > engine.header.log_length:
                break
            at = block * 7 * MiB + rng.randrange(0, MiB // RND) * RND  # new blocks, many BAT pages
            data = rng.randbytes(RND)
            image.seek(at)
            image.write(data)
            written[at] = data
            block += 1
    finally:
        vlog.build_entry = original
    abandon(image)
    with ds.open(path) as check:
        entries = vhdx_engine(check).replayed
    return path, entries, written


def replay_times(tmp: Path, runs_: int) -> tuple[int, int, float, float, bool]:
    """(entries, log bytes in use, best read-only open+close with replay, best open+close of
    the same image replayed clean, content ok)."""
    path, entries, written = make_dirty(tmp)
    with ds.open(path) as image:
        ok = all(image.pread(at, len(data)) == data for at, data in written.items())
    used = len(written) * 2 * RND
    warm(path)
    replay = best(max(runs_, 5), lambda: ds.open(path).close())
    clean = tmp / "clean.vhdx"
    shutil.copyfile(path, clean)
    ds.open(clean, "r+").close()  # replayed into the file
    warm(clean)
    plain = best(max(runs_, 5), lambda: ds.open(clean).close())
    return entries, used, replay, plain, ok


# -- profiling -----------------------------------------------------------------------------

def profile(pair: Pair, reads: int) -> None:
    """cProfile of diskspec's sequential pass and random reads over one VHD."""
    rng = random.Random(SEED + 3)
    offsets = [rng.randrange(0, pair.size // RND) * RND for _ in range(reads)]
    reader = Diskspec(pair.vhd)
    try:
        for what, fn in (("sequential", lambda: reader.seq(pair.size)),
                         ("random", lambda: reader.rnd(offsets))):
            warm(pair.vhd)
            prof = cProfile.Profile()
            prof.runcall(fn)
            print(f"\n-- cProfile: diskspec {what} reads over {pair.name}.vhd")
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    finally:
        reader.close()


# -- main ----------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    units = {"K": KiB, "M": MiB, "G": GiB}
    mult = units.get(text[-1:].upper(), 1)
    value = int(text[:-1] if mult > 1 else text) * mult
    if value < BLOCK or value % BLOCK:
        raise argparse.ArgumentTypeError(f"size must be a positive multiple of {BLOCK} bytes")
    return value


def bat_kib(size: int) -> float:
    return 4 * -(-size // BLOCK) / KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=GiB, help="virtual size (default 1G)")
    ap.add_argument("--reads", type=int, default=100_000, help="random 4 KiB reads per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds after which a measurement stops repeating (default 10)")
    ap.add_argument("--formats", default="vhd,vhdx", help="images to measure (default vhd,vhdx)")
    ap.add_argument("--profile", action="store_true", help="also cProfile diskspec's reads")
    ap.add_argument("--rss-child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        child_rss(*args.rss_child)
        return

    with tempfile.TemporaryDirectory(prefix="diskspec-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        formats = args.formats.split(",")
        pairs = make_images(tmp, args.size, formats)
        vhds = [p for p in pairs if p.fmt == "vpc"]
        huge = make_huge(tmp)
        os.sync()  # no writeback of the new files during the measurements
        print(f"created {len(pairs)} images and a fully allocated raw limit of {args.size / MiB:g} MiB "
              "and a sparse "
              f"{HUGE / GiB:g} GiB VHD in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        missing = [m for m in ("dissect.hypervisor", "pyvhdi") if optional(m) is None]
        if missing:
            print(f"not installed (run bench/setup.sh): {', '.join(missing)}", file=sys.stderr)

        rows = measure(pairs, args.reads, args.runs, args.budget)
        mem = memory(huge)
        opens = open_times([(f"{p.name} {p.size / GiB:g} GiB, BAT {bat_kib(p.size):g} KiB", p.vhd)
                            for p in vhds if p.subformat == "dynamic"]
                           + [(f"sparse {HUGE / GiB:g} GiB, BAT {bat_kib(HUGE):g} KiB", huge)], args.runs)
        conv = convert(vhds, args.runs)
        replay = replay_times(tmp, args.runs) if "vhdx" in formats else None

        print(f"\nRead speed, {args.size / MiB:g} MiB disks (VHD 2 MiB blocks; VHDX 32 MiB / 1 MiB "
              "blocks as named; half = half of the image's blocks, written whole); sequential: 1 MiB "
              f"reads over the whole disk; random: {args.reads} aligned 4 KiB reads; best and median "
              f"of {args.runs}; page cache warm; ratios best/median")
        print(f"diskspec from {Path(ds.__file__).parent.parent}")
        print("raw = the raw loop over limit.raw, fully allocated (seq: preadv; rnd: os.pread); "
              "dis = dissect.hypervisor on the same VHD/VHDX")
        print_table(rows, args.runs)

        print(f"\nMemory: open a sparse {HUGE / GiB:g} GiB dynamic VHD (BAT "
              f"{4 * (HUGE // BLOCK) / MiB:.1f} MiB), read 5 MiB at 5 places; own subprocess")
        for name, base, peak, opened, hwm in mem:
            mark = f"  goal < {GOAL_RSS_MB:g} MB: {'ok' if peak < GOAL_RSS_MB else 'MISS'}" \
                if name == "diskspec" else ""
            print(f"  {name:10} peak RSS {peak:6.1f} MB (after imports {base:6.1f} MB, "
                  f"+{peak - base:5.1f} MB; VmHWM {hwm:6.1f} MB)  open {opened * 1e3:7.2f} ms{mark}")

        print("\nOpen + close time (best of runs; dissect reads BAT entries lazily, one at a time)")
        for label, name, secs in opens:
            print(f"  {label:32} {name:10} {secs * 1e3:8.2f} ms")

        print("\nConvert to raw (MB/s of virtual size, best of runs)")
        for name, what, speed in conv:
            print(f"  {name:5} {what:32} {speed:8.0f} MB/s")
        print("  diskspec convert: see bench/convert.py")

        if replay is not None:
            entries, used, secs, plain, ok = replay
            print(f"\nVHDX log replay: read-only open + close of a 4 GiB VHDX (1 MiB blocks) whose 1 MiB "
                  f"log holds {entries} entries to replay ({used / KiB:g} KiB), replayed in memory; "
                  f"best of {max(args.runs, 5)}")
            mark = f"goal < {GOAL_REPLAY_MS:g} ms: {'ok' if secs * 1e3 < GOAL_REPLAY_MS else 'MISS'}"
            print(f"  with replay {secs * 1e3:8.2f} ms   {mark}{'' if ok else '  WRONG DATA'}")
            print(f"  clean log   {plain * 1e3:8.2f} ms   (the same image after a read-write replay)")

        if args.profile and vhds:
            profile(vhds[0], args.reads)


if __name__ == "__main__":
    main()
