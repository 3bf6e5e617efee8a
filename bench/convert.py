"""Convert speed: `diskspec convert` against `qemu-img convert`, measured in one run.

Creates in a temporary directory (with diskspec's own create/write, runs of whole blocks):
  half.raw   a raw file with a random half of its 2 MiB blocks written (random data, fixed
             seed), holes elsewhere
  half.vhd   a dynamic VHD (2 MiB blocks) with the same guest content
  half.vhdx  a dynamic VHDX (default block size) with the same guest content
then converts with both tools, each as its own command line (process start included), and with
diskspec's convert() called in the bench's own process (the copy alone, no process start):
  VHD  -> raw   -f vpc  -O raw
  VHDX -> VHD   -f vhdx -O vpc  -o subformat=dynamic,force_size=on
  raw  -> VHDX  -f raw  -O vhdx
in two cache modes, the same for both tools:
  durable  the target is fsynced at the end: diskspec's default, qemu-img -t writeback
  unsafe   no flush at all: -t unsafe for both (qemu-img's default for convert)
Comparing qemu-img's default with diskspec's would time an fsync of the whole target
(~0.3 s for 512 MiB here) on one side only. Rounds alternate the tools; the source's page
cache is warmed before each conversion (this machine pages out page cache left idle for
~30 s), the destination removed and `sync` run before it. Each tool's output is checked
once: the sha256 of its guest content (read back by `qemu-img convert -O raw`, or the file
itself when raw) must equal the source's.

diskspec is timed as a user runs it: a wheel of this tree is pip-installed into a fresh venv
in the temporary directory (PyPI or a local index must be reachable) and its `diskspec`
script is run. The interpreter running the bench is not used for that: its site-packages
may hold .pth start-up hooks (an editable install's import finder, a sandbox's certificate
patch) that cost ~35 ms per start here and are no part of diskspec. --in-tree times
`python -m diskspec.runtime` with this interpreter instead (modules byte-compiled first, as
a wheel install does).

Run: python bench/convert.py [--sizes 1G,4G] [--runs 5] [--in-tree]
Goals (issue 16): on the 4 GiB half-allocated sources (where process start is a few percent)
the whole diskspec process >= 1.0x qemu-img's speed for each case in both cache modes; and
diskspec's in-process copy (the "in-proc/q" column: qemu-img's whole run over the in-process
convert() time) >= 1.0x on 1 GiB. Nothing here asserts a time; it prints ratios of the best
and of the median times.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import MAX_RUN, runs, warm

import diskspec.runtime as ds
from diskspec.runtime.cli.common import target_options
from diskspec.runtime.cli.options import parse_options
from diskspec.runtime.ops.convert import convert

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 2 * MiB
SEED = 20240611
GOAL = 1.0


@dataclass
class Case:
    name: str
    src: Path
    src_fmt: str
    out_fmt: str
    options: str  # -o for both tools ("" for none)
    ext: str


def make_sources(tmp: Path, size: int) -> dict[str, Path]:
    """half.raw, half.vhd and half.vhdx with the same guest content."""
    rng = random.Random(SEED)
    n = size // BLOCK
    pool = rng.randbytes(min(MAX_RUN * BLOCK, size) + 16 * MiB)
    blocks = sorted(rng.sample(range(n), n // 2))
    paths = {"raw": tmp / "half.raw", "vpc": tmp / "half.vhd", "vhdx": tmp / "half.vhdx"}
    images = [ds.create(paths["raw"], "raw", size),
              ds.create(paths["vpc"], "vpc", size, subformat="dynamic", block_size=BLOCK,
                        force_size=True),
              ds.create(paths["vhdx"], "vhdx", size)]
    try:
        for first, count in runs(blocks):
            start = rng.randrange(0, len(pool) - count * BLOCK + 1, 512)
            data = memoryview(pool)[start : start + count * BLOCK]
            for image in images:
                image.seek(first * BLOCK)
                image.write(data)
    finally:
        for image in images:
            image.close()
    return paths


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
    finally:
        os.close(fd)
    return h.hexdigest()


def guest_sha(qemu: str, path: Path, fmt: str, tmp: Path) -> str:
    """sha256 of the guest content, read back by qemu-img (the file itself when raw)."""
    if fmt == "raw":
        return file_sha(path)
    out = tmp / "check.raw"
    out.unlink(missing_ok=True)
    subprocess.run([qemu, "convert", "-f", fmt, "-O", "raw", str(path), str(out)], check=True)
    try:
        return file_sha(out)
    finally:
        out.unlink()


MODES = {"durable": {"qemu-img": ["-t", "writeback"], "diskspec": []},
         "unsafe": {"qemu-img": ["-t", "unsafe"], "diskspec": ["-t", "unsafe"]}}


@dataclass
class Diskspec:
    """How diskspec is started: its command, and the interpreter it runs on."""
    command: list[str]
    python: str
    where: str  # for the report


def commands(case: Case, qemu: str, diskspec: Diskspec, dst: Path, mode: str) -> dict[str, list[str]]:
    opts = ["-o", case.options] if case.options else []
    tail = ["-f", case.src_fmt, "-O", case.out_fmt, *opts, str(case.src), str(dst)]
    flags = MODES[mode]
    return {"qemu-img": [qemu, "convert", *flags["qemu-img"], *tail],
            "diskspec": [*diskspec.command, "convert", *flags["diskspec"], *tail]}


IN_PROCESS = "in-process"  # diskspec's convert() in this process, not a command line


def timed(cmd: list[str], dst: Path) -> float:
    dst.unlink(missing_ok=True)
    os.sync()  # the previous target's writeback does not land in this one's time
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def timed_in_process(case: Case, mode: str, dst: Path) -> float:
    """convert() as the command line calls it, timed from opening the source to closing the
    target: the copy without the process's start and exit."""
    options = target_options(case.out_fmt, parse_options([case.options] if case.options else []))
    dst.unlink(missing_ok=True)
    os.sync()
    t = time.perf_counter()
    with ds.open(case.src, format=case.src_fmt) as src:
        convert([src], dst, case.out_fmt, options, flush=mode == "durable")
    return time.perf_counter() - t


def measure(case: Case, mode: str, qemu: str, diskspec: Diskspec, tmp: Path, runs_: int,
            truth: str) -> tuple[dict[str, list[float]], dict[str, bool]]:
    """Sorted seconds per tool; and whether each tool's output has the source's content."""
    dst = tmp / f"out.{case.ext}"
    cmds = commands(case, qemu, diskspec, dst, mode)
    tools = [*cmds, IN_PROCESS]
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    ok: dict[str, bool] = {}
    for round_ in range(runs_):
        order = tools if round_ % 2 == 0 else tools[::-1]
        for tool in order:
            warm(case.src)
            times[tool].append(timed_in_process(case, mode, dst) if tool == IN_PROCESS
                               else timed(cmds[tool], dst))
            if tool not in ok:
                ok[tool] = guest_sha(qemu, dst, case.out_fmt, tmp) == truth
            print(f"  {case.name:12} {mode:8} {tool:9} {times[tool][-1]:7.3f} s", file=sys.stderr,
                  flush=True)
    dst.unlink(missing_ok=True)
    return {tool: sorted(t) for tool, t in times.items()}, ok


def start_up(qemu: str, diskspec: Diskspec) -> dict[str, float]:
    """Best seconds of 5 for commands that do nothing but start: qemu-img, diskspec's
    interpreter with its site packages, and that interpreter importing diskspec's CLI."""
    cmds = {"qemu-img --version": [qemu, "--version"],
            "python": [diskspec.python, "-c", "pass"],
            "python + diskspec imports": [diskspec.python, "-c", "import diskspec.runtime.cli.main"]}
    best = {}
    for tool, cmd in cmds.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        best[tool] = min(times)
    return best


ROOT = Path(ds.__file__).parent.parent  # the tree diskspec is imported from


def in_tree() -> Diskspec:
    """This interpreter's diskspec, its modules byte-compiled as a wheel install would be
    (under PYTHONDONTWRITEBYTECODE an editable install compiles them at every start)."""
    for sub in ("runtime", "formats", "codegen"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / sub)], check=True,
                       stdout=subprocess.DEVNULL)
    return Diskspec([sys.executable, "-m", "diskspec.runtime"], sys.executable, f"{ROOT} (in tree)")


def installed(tmp: Path) -> Diskspec:
    """A wheel of this tree pip-installed into a fresh venv under `tmp`, as a user has it."""
    venv = tmp / "venv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"pip install of {ROOT} into {venv} failed (use --in-tree offline):\n{done.stderr}")
    print(f"installed diskspec into a fresh venv in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return Diskspec([str(venv / "bin" / "diskspec")], python, f"a wheel of {ROOT} in a fresh venv")


def parse_size(text: str) -> int:
    units = {"K": KiB, "M": MiB, "G": GiB}
    mult = units.get(text[-1:].upper(), 1)
    value = int(text[:-1] if mult > 1 else text) * mult
    if value < BLOCK or value % BLOCK:
        raise argparse.ArgumentTypeError(f"size must be a positive multiple of {BLOCK} bytes")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1G,4G", help="virtual sizes, one set of sources each "
                    "(default 1G,4G)")
    ap.add_argument("--runs", type=int, default=5, help="rounds (best and median are reported)")
    ap.add_argument("--in-tree", action="store_true",
                    help="time this interpreter's diskspec instead of a fresh venv's")
    args = ap.parse_args()
    qemu = shutil.which("qemu-img")
    if qemu is None:
        sys.exit("qemu-img not found (run bench/setup.sh)")
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]

    sizes = [parse_size(text) for text in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="diskspec-bench-") as tmp_name:
        tmp = Path(tmp_name)
        diskspec = in_tree() if args.in_tree else installed(tmp)
        start = start_up(qemu, diskspec)
        for size in sizes:
            t = time.perf_counter()
            src = make_sources(tmp, size)
            os.sync()
            truth = file_sha(src["raw"])
            print(f"created half-allocated raw, VHD and VHDX sources of {size / MiB:g} MiB in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
            cases = [Case("VHD -> raw", src["vpc"], "vpc", "raw", "", "raw"),
                     Case("VHDX -> VHD", src["vhdx"], "vhdx", "vpc", "subformat=dynamic,force_size=on",
                          "vhd"),
                     Case("raw -> VHDX", src["raw"], "raw", "vhdx", "", "vhdx")]
            results += [(size, case, mode, *measure(case, mode, qemu, diskspec, tmp, args.runs, truth))
                        for mode in MODES for case in cases]
            for path in src.values():
                path.unlink()

    print(f"\nConvert, half-allocated sources (random 2 MiB blocks); MB/s of virtual size, best and "
          f"median of {args.runs}; source page cache warm; process start included")
    print(f"{version}; diskspec from {diskspec.where}")
    print("process start alone (best of 5): "
          + ", ".join(f"{tool} {seconds * 1000:.0f} ms" for tool, seconds in start.items()))
    print("ratio best / median: the two command lines (diskspec over qemu-img speed); in-process: "
          "diskspec's convert() without the process start and exit, best time; in-proc/q: "
          "qemu-img's best whole run over that time")
    head = (f"{'size':>5}  {'case':12}  {'mode':8}  {'qemu-img MB/s':>13}  {'diskspec MB/s':>13}  "
            f"{'ratio best':>10}  {'ratio median':>12}  {'in-process':>10}  {'in-proc/q':>9}  "
            f"{'content':>7}  goal")
    print(head)
    print("-" * len(head))
    for size, case, mode, times, ok in results:
        q, d = (size / times[tool][0] / 1e6 for tool in ("qemu-img", "diskspec"))
        mid = len(times["qemu-img"]) // 2
        median = times["qemu-img"][mid] / times["diskspec"][mid]
        content = "ok" if all(ok.values()) else "WRONG " + ",".join(k for k, v in ok.items() if not v)
        inner = times[IN_PROCESS][0]
        inner_ratio = times["qemu-img"][0] / inner
        if size >= 4 * GiB:
            mark = f"whole >={GOAL:g}x {'ok' if d / q >= GOAL else 'MISS'}"
        else:
            mark = f"in-proc >={GOAL:g}x {'ok' if inner_ratio >= GOAL else 'MISS'}"
        print(f"{size // MiB:4}M  {case.name:12}  {mode:8}  {q:13.0f}  {d:13.0f}  {d / q:9.2f}x  "
              f"{median:11.2f}x  {inner:9.3f}s  {inner_ratio:8.2f}x  {content:>7}  {mark}")

if __name__ == "__main__":
    main()
