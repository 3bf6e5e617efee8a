"""Scale: what each command costs as the disk grows and the data stays the same (issue 15).

Creates with qemu-img (and writes with qemu-io), in a temporary directory or --dir:
  VHD              dynamic, 2 MiB blocks (-o subformat=dynamic,force_size=on), at 1 GiB,
                   64 GiB and 2040 GiB (VHD's largest size stands in for the 2 TiB step)
  VHDX             qemu-img's default block size (it grows with the disk: 8 MiB at 1 GiB,
                   16 MiB at 64 GiB, 32 MiB at 2 TiB, 64 MiB at 64 TiB), at 1 GiB, 64 GiB,
                   2 TiB and 64 TiB
  VHDX 1M          -o block_size=1M, the same sizes (64 M blocks at 64 TiB)
each with the same data: 100 writes of 1 MiB (a pattern byte each) spread evenly over the disk,
so ~100 blocks are allocated whatever the size. Then runs, each in its own process, best time
of --runs, with the process's peak RSS (wait4's ru_maxrss, taken through `sh -c` so that the
child does not inherit this process's peak across exec):
  info         diskspec info -f FMT            qemu-img info -f FMT
  map          diskspec map --output=json      qemu-img map --output=json (outputs compared)
  check        diskspec check -f FMT           qemu-img check -f FMT ("–" for vpc: qemu has none)
  open+read    python -c: diskspec.runtime.open and close, open again, read_at 1 MiB of
               written data, close (the bytes checked against the pattern); the notes give
               the in-process time of the first open (with the imports it triggers) and of
               the second (the image alone)
                                               qemu-io -r -c "read -P PATTERN OFF 1M"
Prints a table per image, then the growth from one size step to the next (ratio of time and of
peak RSS), so that what scales with the disk rather than the data shows as a ratio well above 1.
A command that runs past --timeout is killed and shows "timeout"; a command whose runs took
--budget seconds stops repeating. The source page cache is warmed (data segments only) before
each command. Nothing here asserts a time.

Run: python bench/scale.py [--runs 3] [--timeout 60] [--sizes 1G,64G,2T,64T] [--dir DIR]
     python bench/scale.py --quick     (a smoke run: 1 GiB and 64 GiB, one run each)
Goals (issue 15): open O(1) in the table size (64 TiB VHDX, 1 MiB blocks: open < 10 ms and
< 40 MB RSS, reading 1 MiB stays < 40 MB); info and map within 3x qemu-img's whole-process
time; check >= 10 M table entries/s in bounded memory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import warm_data

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
VHD_MAX = 0xFF000000 * 512  # 2040 GiB
WRITES = 100
DEFAULT_SIZES = "1G,64G,2T,64T"
QUICK_SIZES = "1G,64G"

#: the open+read child: argv = path, format, offset, pattern byte. Exit 3 on wrong bytes.
READ_CHILD = """\
import sys, time
import diskspec.runtime as ds
t = time.perf_counter()
ds.open(sys.argv[1], format=sys.argv[2]).close()
first = time.perf_counter() - t
t = time.perf_counter()
img = ds.open(sys.argv[1], format=sys.argv[2])
again = time.perf_counter() - t
buf = bytearray(1 << 20)
img.read_at(int(sys.argv[3]), memoryview(buf))
img.close()
print(first, again)
sys.exit(0 if buf == bytes([int(sys.argv[4])]) * len(buf) else 3)
"""


# -- images --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    name: str
    fmt: str  # qemu's format name
    options: str  # qemu-img create -o
    largest: int  # the format's largest virtual size


SERIES = {
    "vhd": Series("VHD", "vpc", "subformat=dynamic,force_size=on", VHD_MAX),
    "vhdx": Series("VHDX", "vhdx", "", 64 * TiB),
    "vhdx1m": Series("VHDX 1M", "vhdx", "block_size=1M", 64 * TiB),
}


@dataclass
class Disk:
    series: Series
    size: int
    path: Path
    block: int = 0  # from qemu-img info (cluster-size)

    @property
    def label(self) -> str:
        return f"{self.series.name} {human(self.size)}"

    def written(self, i: int) -> int:
        """The guest offset of write i (1 MiB aligned, evenly spread)."""
        return i * (self.size // WRITES) // MiB * MiB

    def pattern(self, i: int) -> int:
        return i % 255 + 1


def human(size: int) -> str:
    for unit, name in ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def parse_size(text: str) -> int:
    units = {"K": KiB, "M": MiB, "G": GiB, "T": TiB}
    mult = units.get(text[-1:].upper(), 1)
    value = int(text[:-1] if mult > 1 else text) * mult
    if value < 16 * MiB or value % MiB:
        raise argparse.ArgumentTypeError(f"{text}: a size must be a multiple of 1 MiB, >= 16 MiB")
    return value


def make_disk(series: Series, size: int, where: Path, qemu_img: str, qemu_io: str) -> Disk:
    """Create (or, in a kept --dir, reuse) one image with its 100 written MiB."""
    ext = "vhd" if series.fmt == "vpc" else series.fmt
    tag = series.name.lower().replace(" ", "-")
    disk = Disk(series, size, where / f"{tag}-{size // MiB}M.{ext}")
    if not disk.path.exists():
        part = disk.path.with_name(disk.path.name + ".part")
        part.unlink(missing_ok=True)
        opts = ["-o", series.options] if series.options else []
        subprocess.run([qemu_img, "create", "-q", "-f", series.fmt, *opts, str(part), str(size)], check=True)
        writes = []
        for i in range(WRITES):
            writes += ["-c", f"write -q -P {disk.pattern(i)} {disk.written(i)} 1M"]
        subprocess.run([qemu_io, "-f", series.fmt, *writes, str(part)], check=True)
        part.rename(disk.path)
    info = subprocess.run([qemu_img, "info", "-f", series.fmt, "--output=json", str(disk.path)],
                          check=True, capture_output=True, text=True)
    disk.block = int(json.loads(info.stdout).get("cluster-size", 0))
    return disk


# -- running -------------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float
    rss: float  # MiB, peak
    rc: int
    timeout: bool
    out: Path  # stdout of the run
    err: str  # last line of stderr (a traceback's exception)


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants are reparented to this process (prctl), so that run_once can wait
    for the command itself, not for the shell that started it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def run_once(cmd: list[str], out: Path, timeout: float) -> Sample:
    """One run of cmd in its own process group, killed after `timeout` s, with the peak RSS of
    the command alone. A process exec'ed from this one (subprocess uses vfork) would start from
    this process's peak (Linux carries ru_maxrss across exec), so a shell forks the command in
    the background and exits; the command, orphaned, is reparented to this subreaper and reaped
    here with wait4, whose ru_maxrss is then its own."""
    err_path = out.with_suffix(".err")
    killed = threading.Event()
    with open(out, "wb") as sink, open(err_path, "wb") as errs:
        t = time.perf_counter()
        proc = subprocess.Popen(["sh", "-c", '"$@" &', "sh", *cmd], stdout=sink, stderr=errs,
                                stdin=subprocess.DEVNULL, start_new_session=True)

        def kill() -> None:
            killed.set()
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        status, usage = 0, None
        try:
            while True:  # the shell and the command, in either order
                try:
                    pid, got, rusage = os.wait4(-1, 0)
                except ChildProcessError:
                    break
                if pid == proc.pid:
                    proc.returncode = os.waitstatus_to_exitcode(got)  # reaped here, not by Popen
                else:
                    status, usage = got, rusage
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t
    lines = err_path.read_text(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if usage is None:  # the shell could not start the command
        return Sample(seconds, 0.0, proc.returncode or 127, killed.is_set(), out, last)
    return Sample(seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), killed.is_set(),
                  out, last)


@dataclass
class Result:
    """The runs of one command on one image."""
    samples: list[Sample] = field(default_factory=list)
    absent: bool = False  # the tool has no such command for the format ("–")

    @property
    def done(self) -> list[Sample]:
        return [s for s in self.samples if not s.timeout]

    @property
    def good(self) -> list[Sample]:
        """The runs that succeeded (exit 0): the only ones timed."""
        return [s for s in self.done if s.rc == 0]

    @property
    def best(self) -> float | None:
        good = self.good
        return min(s.seconds for s in good) if good else None

    @property
    def rss(self) -> float | None:
        good = self.good
        return max(s.rss for s in good) if good else None

    def text(self) -> tuple[str, str]:
        """(time, RSS) as printed."""
        if self.absent:
            return "–", "–"
        if not self.samples:
            return "", ""
        if not self.done:
            return "timeout", "–"
        if not self.good:
            return f"exit {self.done[0].rc}", "–"
        best, rss = self.best, self.rss
        assert best is not None and rss is not None
        return f"{best:.3f}", f"{rss:.0f}"


def repeat(cmd: list[str], out: Path, runs: int, timeout: float, budget: float,
           before: Callable[[], None]) -> Result:
    """Up to `runs` runs; stops at a timeout or once the runs took `budget` s."""
    result = Result()
    for _ in range(runs):
        before()
        sample = run_once(cmd, out.with_name(f"{out.name}.{len(result.samples)}"), timeout)
        result.samples.append(sample)
        if sample.timeout or sum(s.seconds for s in result.samples) >= budget:
            break
    return result


@dataclass
class Tools:
    diskspec: list[str]
    python: str
    qemu_img: str
    qemu_io: str


COMMANDS = ("info", "map", "check", "open+read")


def command_lines(disk: Disk, tools: Tools) -> dict[str, tuple[list[str], list[str] | None]]:
    """(diskspec's, qemu's or None when qemu has no such command) per command."""
    fmt, path = disk.series.fmt, str(disk.path)
    mid = WRITES // 2
    at, pattern = disk.written(mid), disk.pattern(mid)
    return {
        "info": ([*tools.diskspec, "info", "-f", fmt, path], [tools.qemu_img, "info", "-f", fmt, path]),
        "map": ([*tools.diskspec, "map", "-f", fmt, "--output=json", path],
                [tools.qemu_img, "map", "-f", fmt, "--output=json", path]),
        "check": ([*tools.diskspec, "check", "-f", fmt, path],
                  None if fmt == "vpc" else [tools.qemu_img, "check", "-f", fmt, path]),
        "open+read": ([tools.python, "-c", READ_CHILD, path, fmt, str(at), str(pattern)],
                      [tools.qemu_io, "-r", "-f", fmt, "-c", f"read -q -P {pattern} {at} 1M", path]),
    }


@dataclass
class Row:
    disk: Disk
    command: str
    ours: Result
    qemu: Result
    note: str = ""


def measure(disk: Disk, tools: Tools, work: Path, args: argparse.Namespace) -> list[Row]:
    rows = []
    for command, (ours_cmd, qemu_cmd) in command_lines(disk, tools).items():
        out = work / f"{disk.path.stem}-{command}"

        def before() -> None:
            warm_data(disk.path)

        ours = Result()
        qemu = Result(absent=qemu_cmd is None)
        # the tools take turns, run by run, so that drift on this machine hits both alike
        for _ in range(args.runs):
            for result, cmd, tag in ((ours, ours_cmd, "ds"), (qemu, qemu_cmd, "qemu")):
                if cmd is None or (result.samples and (result.samples[-1].timeout or sum(
                        s.seconds for s in result.samples) >= args.budget)):
                    continue
                got = repeat(cmd, out.with_name(f"{out.name}-{tag}-{len(result.samples)}"), 1,
                             args.timeout, args.budget, before)
                result.samples += got.samples
        rows.append(Row(disk, command, ours, qemu, note(disk, command, ours, qemu)))
        failed = next((x for x in ours.done if x.rc != 0), None)
        if failed is not None:  # the whole stderr, for the report
            print(failed.out.with_suffix(".err").read_text(errors="replace"), file=sys.stderr)
        print(f"  {disk.label:16} {command:9} diskspec {'/'.join(ours.text()):>14}  "
              f"qemu {'/'.join(qemu.text()):>14}  {rows[-1].note}", file=sys.stderr, flush=True)
    return rows


def data_blocks(extents: list[dict[str, object]], block: int) -> set[int]:
    """The blocks a map's data extents cover."""
    out: set[int] = set()
    for e in extents:
        start, length = e["start"], e["length"]
        assert isinstance(start, int) and isinstance(length, int)
        if e.get("data"):
            out.update(range(start // block, -(-(start + length) // block)))
    return out


def map_notes(disk: Disk, ours: Result, qemu: Result) -> list[str]:
    """diskspec's map against the blocks qemu-io wrote, and against qemu-img's map (which for
    vhdx, in qemu 7.2, is one data extent: its driver reports no block status)."""
    if not ours.good or not disk.block:
        return []
    mine = json.loads(ours.good[0].out.read_bytes())
    written = {disk.written(i) // disk.block for i in range(WRITES)}
    got = data_blocks(mine, disk.block)
    notes = ["data = written blocks" if got == written
             else f"MAP WRONG: {len(got)} data blocks, {len(written)} written"]
    if qemu.good:
        theirs = json.loads(qemu.good[0].out.read_bytes())
        if theirs == mine:
            notes.append("= qemu-img's")
        elif len(theirs) == 1 and theirs[0].get("data") and theirs[0]["length"] == disk.size:
            notes.append("qemu-img: no block status")
        else:
            notes.append("DIFFERS from qemu-img's")
    return notes


def note(disk: Disk, command: str, ours: Result, qemu: Result) -> str:
    """What the runs say besides their times: exit codes, map agreement, open time."""
    notes = []
    for who, result in (("diskspec", ours), ("qemu", qemu)):
        bad = {s.rc for s in result.done if s.rc != 0}
        if bad:
            why = next(s.err for s in result.done if s.rc != 0)
            failed = sum(s.rc != 0 for s in result.done)
            notes.append(f"{who} exit {','.join(map(str, sorted(bad)))} in {failed} of "
                         f"{len(result.done)} runs: {why[:80]}")
    if command == "map":
        notes += map_notes(disk, ours, qemu)
    if command == "open+read" and ours.good:
        opens = []
        for s in ours.good:
            try:
                once, again = map(float, s.out.read_text().split())
                opens.append((once, again))
            except ValueError:
                pass
        if opens:
            notes.append(f"open in-process: first {min(o[0] for o in opens) * 1e3:.1f} ms "
                         f"(lazy imports too), again {min(o[1] for o in opens) * 1e3:.2f} ms")
    return "; ".join(notes)


def start_up(tools: Tools, work: Path, args: argparse.Namespace) -> list[tuple[str, Result]]:
    """What a process costs before any image is opened."""
    cmds = {"python -c pass": [tools.python, "-c", "pass"],
            "python -c 'import diskspec.runtime'": [tools.python, "-c", "import diskspec.runtime"],
            "diskspec --version": [*tools.diskspec, "--version"],
            "qemu-img --version": [tools.qemu_img, "--version"]}
    return [(name, repeat(cmd, work / f"start-{i}", max(args.runs, 5), args.timeout, args.budget,
                          lambda: None)) for i, (name, cmd) in enumerate(cmds.items())]


# -- printing ------------------------------------------------------------------------------

def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "–"


def print_tables(rows: list[Row]) -> None:
    head = (f"{'image':16} {'block':>6} {'blocks':>9}  {'command':9}  {'diskspec s':>10} {'MiB':>5}  "
            f"{'qemu s':>8} {'MiB':>5}  {'time ds/q':>9} {'RSS ds/q':>8}  notes")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        d = r.disk
        first = d is not last
        last = d
        blocks = -(-d.size // d.block) if d.block else 0
        lead = (f"{d.label:16} {human(d.block) if d.block else '?':>6} {blocks:>9}" if first
                else " " * 33)
        (ot, orss), (qt, qrss) = r.ours.text(), r.qemu.text()
        print(f"{lead}  {r.command:9}  {ot:>10} {orss:>5}  {qt:>8} {qrss:>5}  "
              f"{ratio(r.ours.best, r.qemu.best):>9} {ratio(r.ours.rss, r.qemu.rss):>8}  {r.note}")


def print_growth(rows: list[Row]) -> None:
    """Each series' command from one size step to the next: ratios of time and peak RSS."""
    head = (f"{'series':8} {'step':22} {'size x':>7}  {'command':9}  {'diskspec time x':>15} "
            f"{'RSS x':>6}  {'qemu time x':>11} {'RSS x':>6}")
    print(head)
    print("-" * len(head))
    by: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by.setdefault((r.disk.series.name, r.command), []).append(r)
    for (name, command), steps in by.items():
        for a, b in zip(steps, steps[1:], strict=False):
            step = f"{human(a.disk.size)} -> {human(b.disk.size)}"
            print(f"{name:8} {step:22} {b.disk.size / a.disk.size:7.0f}  {command:9}  "
                  f"{ratio(b.ours.best, a.ours.best):>15} {ratio(b.ours.rss, a.ours.rss):>6}  "
                  f"{ratio(b.qemu.best, a.qemu.best):>11} {ratio(b.qemu.rss, a.qemu.rss):>6}")


# -- main ----------------------------------------------------------------------------------

def default_diskspec() -> list[str]:
    """The `diskspec` script installed next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "diskspec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "diskspec.runtime"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per command (best time is kept)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is killed")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds of runs after which a command stops repeating")
    ap.add_argument("--sizes", default=None, help=f"size steps (default {DEFAULT_SIZES}; VHD "
                    "stops at 2040 GiB)")
    ap.add_argument("--series", default=",".join(SERIES), help=f"of {','.join(SERIES)}")
    ap.add_argument("--dir", type=Path, help="create the images here and keep them (reused when "
                    "they exist); default a temporary directory")
    ap.add_argument("--diskspec", help="the diskspec command line (default: the script next to "
                    "this interpreter)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of open+read")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, 1 run, "
                    "timeout 30 s")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.timeout = 1, min(args.timeout, 30.0)
    sizes = [parse_size(s) for s in (args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)).split(",")]
    unknown = set(args.series.split(",")) - set(SERIES)
    if unknown:
        ap.error(f"unknown series {','.join(sorted(unknown))}")
    qemu_img, qemu_io = shutil.which("qemu-img"), shutil.which("qemu-io")
    if qemu_img is None or qemu_io is None:
        sys.exit("qemu-img and qemu-io are needed (run bench/setup.sh)")
    become_subreaper()
    tools = Tools(shlex.split(args.diskspec) if args.diskspec else default_diskspec(), args.python,
                  qemu_img, qemu_io)

    with tempfile.TemporaryDirectory(prefix="diskspec-scale-") as tmp_name:
        where = args.dir or Path(tmp_name)
        where.mkdir(parents=True, exist_ok=True)
        work = Path(tmp_name) / "out"
        work.mkdir()
        t = time.perf_counter()
        disks = []
        for key in args.series.split(","):
            series = SERIES[key]
            steps = sorted({min(size, series.largest) for size in sizes})
            disks += [make_disk(series, size, where, qemu_img, qemu_io) for size in steps]
        os.sync()
        print(f"{len(disks)} images ready in {where} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        start = start_up(tools, work, args)
        rows = [row for disk in disks for row in measure(disk, tools, work, args)]
        version = subprocess.run([qemu_img, "--version"], capture_output=True, text=True).stdout
        files = {d.label: (d.path.stat().st_size, d.path.stat().st_blocks * 512) for d in disks}

    print(f"\nScale: {WRITES} writes of 1 MiB spread over each disk; whole process, best of "
          f"{args.runs} (time s) and peak RSS (MiB); timeout {args.timeout:g} s")
    print(f"{version.splitlines()[0]}; diskspec: {shlex.join(tools.diskspec)}; open+read: "
          f"{tools.python} -c (diskspec.runtime.open + read_at 1 MiB) / qemu-io -r read -P")
    digest = hashlib.sha256(READ_CHILD.encode()).hexdigest()[:12]
    print(f"process start alone (best of {max(args.runs, 5)}): " + ", ".join(
        f"{name} {r.text()[0]} s {r.text()[1]} MiB" for name, r in start) + f"  [read child {digest}]")
    print("files: " + ", ".join(f"{label} {size / MiB:.0f} MiB ({used / MiB:.0f} on disk)"
                                for label, (size, used) in files.items()))
    print()
    print_tables(rows)
    print("\nGrowth per size step (next / previous; ~1x: independent of the disk's size)")
    print_growth(rows)


if __name__ == "__main__":
    main()
