"""qemu-img's smaller commands: dd, bench, snapshot, amend (qemu-img 7.2's options, messages
and exit codes; the output lines that scripts parse are qemu's, word for word)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from ..engine import Snapshot
from ..errors import DiskspecError, UnsupportedFeatureError
from ..image import Image
from ..image import create as create_image
from ..image import open as open_image
from .common import Parser, UsageError, add_common, err, open_arg, request
from .units import parse_size, size_to_str

# qemu's wording for a number it could not read as a size (two lines in qemu's output)
_SUFFIX_HINT = ("specified. You may use k, M, G, T, P or E suffixes for\n"
                "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")


def _qemu_size(text: str, what: str) -> int:
    try:
        return parse_size(text, what)
    except DiskspecError:
        raise UsageError(f"Invalid {what} {_SUFFIX_HINT}") from None


# -- dd --------------------------------------------------------------------------------------

DD_USAGE = ("usage: diskspec dd [--image-opts] [-U] [-f FMT] [-O OUTPUT_FMT] [bs=BLOCK_SIZE] "
            "[count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT\n\n"
            "Copy INPUT's guest data to a new image OUTPUT (format -O, default raw), as\n"
            "qemu-img dd: bs (default 512) bytes per block, skip blocks of the input first,\n"
            "copy up to count blocks. As in qemu-img, the count is counted from the start of\n"
            "the input, so skip=S count=C copies C-S blocks.\n")

#: the largest bs qemu-img dd takes (INT_MAX)
MAX_BS = (1 << 31) - 1


@dataclass
class DdArgs:
    source: str | None = None
    target: str | None = None
    bs: int = 512
    count: int | None = None
    skip: int = 0
    fmt: str | None = None
    out_fmt: str = "raw"
    share: bool = False
    image_opts: bool = False


def parse_dd(argv: list[str]) -> DdArgs | None:
    """qemu-img dd's arguments: getopt options anywhere, then key=value operands; None for
    --help."""
    a = DdArgs()
    args = list(argv)
    while args:
        word = args.pop(0)
        if word in ("-h", "--help"):
            return None
        if word in ("-f", "-O"):
            if not args:
                raise UsageError(f"option requires an argument -- '{word[1]}'")
            value = args.pop(0)
        elif word[:2] in ("-f", "-O") and len(word) > 2:
            word, value = word[:2], word[2:]
        elif word == "-U":
            a.share = True
            continue
        elif word == "--image-opts":
            a.image_opts = True
            continue
        elif word.startswith("-") and word != "-":
            raise UsageError(f"unrecognized option '{word}'")
        else:
            _dd_operand(a, word)
            continue
        if word == "-f":
            a.fmt = value
        else:
            a.out_fmt = value
    if a.source is None or a.target is None:
        raise UsageError("Must specify both input and output files")
    return a


def _dd_operand(a: DdArgs, word: str) -> None:
    key, sep, value = word.partition("=")
    if not sep or key not in ("if", "of", "bs", "count", "skip"):
        raise UsageError(f"unrecognized operand {key}")
    if key == "if":
        a.source = value
    elif key == "of":
        a.target = value
    elif key == "bs":
        bs = _qemu_size(value, "bs") if value else 0
        if not 1 <= bs <= MAX_BS:
            raise UsageError(f"Invalid bs specified. Must be between 1 and {MAX_BS}.")
        a.bs = bs
    elif key == "count":
        a.count = _qemu_size(value, "count")
    else:
        a.skip = _qemu_size(value, "skip")


def cmd_dd(argv: list[str]) -> int:
    a = parse_dd(argv)
    if a is None:
        print(DD_USAGE, end="")
        return 0
    assert a.source is not None and a.target is not None
    source, _ = open_arg(a.source, a.fmt, a.image_opts, share=a.share)
    with source:
        # qemu's arithmetic: count*bs is where the copy ends in the input (when inside it),
        # skip*bs where it starts; the output holds what lies between
        end = -(-source.size // 512) * 512  # qemu's block layer: whole sectors (zeros after)
        if a.count is not None and a.count * a.bs < end:
            end = a.count * a.bs
        start = a.skip * a.bs
        # qemu-img creates the output in whole sectors too
        with create_image(a.target, a.out_fmt, -(-max(0, end - start) // 512) * 512) as target:
            if start > end:
                # qemu-img reports this and still exits 0, with the empty output created
                err(f"{a.source}: cannot skip to specified offset")
                return 0
            _dd_copy(source, target, start, end, a.bs)
    return 0


def _dd_copy(source: Image, target: Image, start: int, end: int, bs: int) -> None:
    # blocks of bs bytes, as qemu-img dd reads them; large blocks are split (no bs-sized
    # allocation beyond 4 MiB) since only the bytes matter
    step = min(bs, 4 << 20)
    buf = memoryview(bytearray(step))
    pos = start
    while pos < end:
        n = min(step, end - pos)
        source.read_at(pos, buf[:n])
        if any(buf[:n]):  # zero blocks are left unallocated, as in a new image they read so
            target.engine.write(pos - start, buf[:n])
        pos += n
    target.flush()


# -- bench -----------------------------------------------------------------------------------

#: qemu's -t values -> the cache modes this runtime has (none and directsync need O_DIRECT)
CACHE_OF = {"writeback": "writeback", "writethrough": "writethrough", "unsafe": "unsafe"}
QEMU_CACHES = ("none", "writeback", "writethrough", "directsync", "unsafe")
AIO_MODES = ("threads", "native", "io_uring")


@dataclass
class BenchPlan:
    """One qemu-img bench run: `count` requests of `size` bytes from `offset`, `step` apart,
    wrapping at the end of the disk as qemu does."""

    count: int
    size: int
    offset: int
    step: int
    depth: int
    write: bool
    pattern: int
    flush_interval: int
    drain: bool

    def offsets(self, image_size: int) -> list[int]:
        out, pos = [], self.offset
        for _ in range(self.count):
            out.append(pos)
            # qemu-img's bench_cb: modulo the disk size (a request across the end fails)
            pos = (pos + self.step) % image_size if image_size else 0
        return out


def _int_arg(text: str, message: str, low: int = 0, high: int = (1 << 31) - 1) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(message) from None
    if not low <= value <= high:
        raise UsageError(message)
    return value


def cmd_bench(argv: list[str]) -> int:
    p = Parser("bench", "Time COUNT read (or -w write) requests on an image, as qemu-img bench.\n\n"
               "diskspec issues the requests one after another: -d (depth) is reported, and "
               "bounds the flush interval, but there is no parallelism.")
    add_common(p)
    p.add_argument("-c", "--count", default="75000", help="number of requests (default 75000)")
    p.add_argument("-d", "--depth", default="64", help="queue depth (default 64)")
    p.add_argument("-o", "--offset", default="0", help="offset of the first request")
    p.add_argument("-s", "--size", default="4096", help="bytes per request (default 4k)")
    p.add_argument("-S", "--step", default="0", help="distance between requests (default: -s)")
    p.add_argument("-w", "--write", action="store_true", help="write requests")
    p.add_argument("--pattern", default="0", help="byte written by -w (default 0)")
    p.add_argument("--flush-interval", default=None, help="flush after every N writes")
    p.add_argument("--no-drain", action="store_true", help="accepted (requests are serial)")
    p.add_argument("-n", "--native", action="store_true", help="accepted (aio=native)")
    p.add_argument("-i", "--aio", default=None, help="threads, native or io_uring (accepted)")
    p.add_argument("-t", "--cache", default="writeback", help="cache mode (default writeback)")
    p.add_argument("-q", "--quiet", action="store_true", help="accepted (qemu prints anyway)")
    p.add_argument("filename", nargs="*")
    a = p.parse_args(argv)
    if len(a.filename) != 1:
        raise UsageError("Expecting one image file name")
    plan = bench_plan(a.count, a.depth, a.offset, a.size, a.step, a.write, a.pattern,
                      a.flush_interval, not a.no_drain)
    if a.aio is not None and a.aio not in AIO_MODES:
        raise UsageError(f"Invalid aio option: {a.aio}")
    if a.cache not in QEMU_CACHES:
        raise UsageError("Invalid cache mode")
    if a.cache not in CACHE_OF:
        raise UnsupportedFeatureError(f"-t {a.cache} (O_DIRECT); use writeback, writethrough "
                                      "or unsafe")
    if (a.native or a.aio == "native") and a.cache in ("writeback", "writethrough", "unsafe"):
        raise DiskspecError(f"Could not open '{a.filename[0]}': aio=native was specified, but "
                            "it requires cache.direct=on, which was not specified.")
    req = request(a.filename[0], a.fmt, a.image_opts)
    with open_image(req.path, "r+" if plan.write else "r", format=req.format,
                    share=a.force_share and not plan.write, backing_policy=a.parents,
                    cache=CACHE_OF[a.cache], **req.options) as image:
        seconds = run_bench(image, plan, print)
    print(f"Run completed in {seconds:.3f} seconds.")
    return 0


def bench_plan(count: str, depth: str, offset: str, size: str, step: str, write: bool,
               pattern: str, flush_interval: str | None, drain: bool) -> BenchPlan:
    """qemu-img bench's checks of its options, in its order and words."""
    n = _int_arg(count, "Invalid request count specified")
    d = _int_arg(depth, "Invalid queue depth specified", low=1)  # qemu hangs on 0
    off = _qemu_size(offset, "offset")
    sz = _qemu_size(size, "buffer size")
    if sz > (1 << 31) - 1:
        raise UsageError("Invalid buffer size specified")
    st = _qemu_size(step, "step_size")
    if st > (1 << 31) - 1:
        raise UsageError("Invalid step_size specified")
    pat = _int_arg(pattern, "Invalid pattern byte specified", high=0xFF)
    fi = 0
    if flush_interval is not None:
        fi = _int_arg(flush_interval, "Invalid flush interval specified")
        if not write:
            raise UsageError("--flush-interval is only available in write tests")
        if fi and fi < d:
            raise UsageError("Flush interval can't be smaller than depth")
    return BenchPlan(n, sz, off, st or sz, d, write, pat, fi, drain)


def run_bench(image: Image, plan: BenchPlan, say: Callable[[str], None]) -> float:
    """Print qemu's summary line(s), run the requests, return the seconds they took. A
    request past the end of the disk fails, as qemu's does."""
    kind = "write" if plan.write else "read"
    say(f"Sending {plan.count} {kind} requests, {plan.size} bytes each, {plan.depth} in parallel "
        f"(starting at offset {plan.offset}, step size {plan.step})")
    if plan.flush_interval:
        say(f"Sending flush every {plan.flush_interval} requests")
    offsets = plan.offsets(image.size)
    buf = memoryview(bytearray([plan.pattern]) * plan.size if plan.write
                     else bytearray(plan.size))
    started = time.perf_counter()
    for done, pos in enumerate(offsets, 1):
        if pos + plan.size > image.size:
            raise DiskspecError("Failed request: Input/output error")
        if plan.write:
            image.seek(pos)
            image.write(buf)  # Image.write: writethrough flushes each request, as qemu's
            if plan.flush_interval and done % plan.flush_interval == 0:
                image.flush()
        else:
            image.read_at(pos, buf)
    if plan.write:
        image.flush()
    return time.perf_counter() - started


# -- snapshot --------------------------------------------------------------------------------


def cmd_snapshot(argv: list[str]) -> int:
    p = Parser("snapshot", "List (-l) the internal snapshots of an image; -a, -c and -d need an "
               "engine that writes snapshots.")
    add_common(p, fmt=False)  # qemu-img snapshot has no -f: the format is probed
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("-l", "--list", action="store_true", help="list the snapshots")
    p.add_argument("-a", "--apply", metavar="SNAPSHOT", help="revert to a snapshot")
    p.add_argument("-c", "--create", metavar="SNAPSHOT", help="create a snapshot")
    p.add_argument("-d", "--delete", metavar="SNAPSHOT", help="delete a snapshot")
    p.add_argument("filename", nargs="*")
    a = p.parse_args(argv)
    if len(a.filename) != 1:
        raise UsageError("Expecting one image file name")
    actions = [x for x in (a.list, a.apply, a.create, a.delete) if x]
    if len(actions) > 1:
        raise UsageError("Cannot mix '-l', '-a', '-c', '-d'")
    listing = not (a.apply or a.create or a.delete)
    image, _ = open_arg(a.filename[0], None, a.image_opts, mode="r" if listing else "r+",
                        share=a.force_share and listing, policy=a.parents)
    with image:
        if listing:
            if not a.quiet:
                print(format_snapshots(image.engine.snapshots()), end="")
            return 0
        refuse_snapshot_change(image, a.apply, a.create, a.delete)


def refuse_snapshot_change(image: Image, apply: str | None, create: str | None,
                           delete: str | None) -> NoReturn:
    """-a/-c/-d: qemu's messages for formats without snapshots; no engine writes snapshots
    yet, so for the others the refusal names the operation."""
    has = image.engine.capabilities.snapshots
    if create:
        if not has:
            raise DiskspecError(f"Could not create snapshot '{create}': -95 (Operation not "
                                "supported)")
        raise UnsupportedFeatureError(f"creating {image.format} snapshots (-c)")
    if delete:
        if not has:
            raise DiskspecError(f"Could not delete snapshot '{delete}': snapshot not found")
        raise UnsupportedFeatureError(f"deleting {image.format} snapshots (-d)")
    if not has:
        raise DiskspecError(f"Could not apply snapshot '{apply}': Block driver does not "
                            "support snapshots")
    raise UnsupportedFeatureError(f"applying {image.format} snapshots (-a)")


def format_snapshots(snapshots: list[Snapshot]) -> str:
    """qemu-img snapshot -l's table (block/qapi.c bdrv_snapshot_dump); nothing at all when
    there are no snapshots, as qemu prints."""
    if not snapshots:
        return ""
    lines = ["Snapshot list:",
             f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"]
    lines += [snapshot_row(s) for s in snapshots]
    return "\n".join(lines) + "\n"


def snapshot_row(s: Snapshot) -> str:
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.date_sec))
    secs = s.vm_clock_nsec // 1_000_000_000
    clock = (f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}."
             f"{s.vm_clock_nsec // 1_000_000 % 1000:03d}")
    icount = "" if s.icount is None else str(s.icount)
    return f"{s.id:<9} {s.name:<16} {size_to_str(s.vm_state_size):>8}{date:>20}{clock:>13}{icount:>11}"


# -- amend -----------------------------------------------------------------------------------


def cmd_amend(argv: list[str]) -> int:
    p = Parser("amend", "Change the create options of an existing image (qemu-img amend).")
    add_common(p, share=False)
    p.add_argument("-o", "--options", action="append", default=[], metavar="OPTIONS")
    p.add_argument("-p", "--progress", action="store_true", help="accepted")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("-t", "--cache", help="accepted for compatibility")
    p.add_argument("--force", action="store_true", help="accepted")
    p.add_argument("filename", nargs="*")
    a = p.parse_args(argv)
    if not a.options:
        raise UsageError("Must specify options (-o)")
    if len(a.filename) != 1:
        raise UsageError("Expecting one image file name")
    image, _ = open_arg(a.filename[0], a.fmt, a.image_opts, mode="r+", policy=a.parents)
    with image:
        # none of the engines can change an option of an existing image (neither can qemu's
        # raw, vpc and vhdx drivers): qemu's message
        raise DiskspecError(f"Format driver '{image.format}' does not support option amendment")
