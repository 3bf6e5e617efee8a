"""The `diskspec` command line (also `python -m diskspec.runtime`): qemu-img's commands with
qemu-img's options, JSON members and exit codes, plus codegen, demo and dissect.

This module parses arguments and prints; the work is done by the runtime modules
(report, mapping, convert, compare, measure, rebase, commit).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from .. import __version__
from ..errors import DiskspecError, ParentMissingError, UnsupportedFeatureError
from ..image import Image
from ..image import create as create_image
from ..image import open as open_image
from .options import (
    OpenRequest,
    create_request,
    format_option_help,
    image_opts,
    parse_options,
    wants_help,
)
from .pipe import tolerant_stdout
from .units import parse_relative_size, parse_size, size_to_str

USAGE = """\
usage: diskspec COMMAND [ARGS...]

qemu-img compatible commands (same options, JSON members and exit codes):
  info     [-f FMT] [--output=human|json] [--backing-chain] [--image-opts] FILENAME
  check    [-q] [-f FMT] [--output=human|json] [-r leaks|all] [--image-opts] FILENAME
  map      [-f FMT] [--output=human|json] [--start-offset=OFF] [--max-length=LEN]
           [--image-opts] FILENAME
  compare  [-f FMT] [-F FMT] [-p] [-q] [-s] [--image-opts] FILENAME1 FILENAME2
  convert  [-f FMT] [-O FMT] [-o OPTIONS] [-B BACKING_FILE [-F BACKING_FMT]] [-S SPARSE_SIZE]
           [-n] [--target-is-zero] [-p] [-q] [-U] [--image-opts] FILENAME [FILENAME2 ...]
           OUTPUT_FILENAME
  create   [-q] [-f FMT] [-b BACKING_FILE [-F BACKING_FMT]] [-o OPTIONS] FILENAME [SIZE]
  commit   [-q] [-f FMT] [-b BASE] [-d] [-p] FILENAME
  rebase   [-q] [-f FMT] [-p] [-u] -b BACKING_FILE [-F BACKING_FMT] FILENAME
  resize   [-q] [-f FMT] [--shrink] [--image-opts] FILENAME [+|-]SIZE
  measure  [--output=human|json] [-O FMT] [-o OPTIONS]
           [--size N | [-f FMT] [--image-opts] FILENAME]

other commands:
  dissect  the forensic view of an image's structures (see `diskspec dissect --help`)
  codegen [--check] [SPEC...]   regenerate formats/*.py from formats/*.ksy
  demo                          create a VHDX, write, dissect, convert to VHD, compare, info

Formats (-f, -O, -F): raw, vpc (alias vhd), and every engine registered since; without -f
the format is probed from the content (raw when nothing else matches; a file of a format
with no engine, such as qcow2, QED or VMDK, is refused rather than read as raw: -f raw does).
Sizes: bytes, or with a suffix k, M, G, T, P, E (powers of 1024); resize also takes +N/-N.
Images are locked as QEMU locks them: one a running VM writes is refused, unless -U (info,
check, map, compare, convert, measure, rebase) opens it read-only anyway.
-o help lists a format's create options. --image-opts takes FILENAME as
driver=FMT,file.filename=PATH[,OPTION=VALUE...], e.g. the VHD size rule:
driver=vpc,file.filename=disk.vhd,force_size_calc=chs|current_size (or size_rule=auto|chs|current_size).

Exit codes: 0 success; 1 failure (bad arguments, unreadable or damaged image, unsupported
feature: one line "diskspec: ..." on stderr). check: 0 no problems, 1 check not completed,
2 corruptions found (remaining after -r), 3 only leaks remain, 63 format has no check.
compare: 0 identical, 1 different, 2 bad arguments or cannot open an image, 4 read error.
130: interrupted (Ctrl-C; a partly converted target is removed). 2: unknown COMMAND.

Run `diskspec COMMAND --help` for the options of a command.
"""

FORMAT_HELP = "image format (probed from the content when omitted)"


class UsageError(DiskspecError):
    """Bad command-line arguments."""


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    # Given a width, argparse does not import shutil (with zlib, bz2 and lzma: ~2 ms at every
    # start) for the terminal's; it builds a formatter for each argument added.
    return argparse.RawDescriptionHelpFormatter(prog, width=_help_width())


def _help_width() -> int:
    """argparse's own choice: $COLUMNS, else the terminal's width, else 80; less 2."""
    try:
        return int(os.environ["COLUMNS"]) - 2
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns - 2  # standard output's
    except (ValueError, OSError):
        return 78


class Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and qemu-img's exit code instead of usage + exit 2."""

    def __init__(self, prog: str, description: str, usage: str | None = None):
        super().__init__(prog=f"diskspec {prog}", description=description, usage=usage,
                         allow_abbrev=False, formatter_class=_help_formatter)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- output helpers --------------------------------------------------------------------------


def err(message: str) -> None:
    print(f"diskspec: {message}", file=sys.stderr)


_JSON_WORDS = {True: "true", False: "false", None: "null"}  # JSON's spelling in human output


def print_json(value: Any) -> None:
    import json  # here, not at start-up: most commands print no JSON (~1 ms per start)

    print(json.dumps(value, indent=4))


class ProgressBar:
    """qemu-img's `    (NN.NN/100%)` with a bar, on stderr, only when it is a terminal."""

    WIDTH = 30

    def __init__(self, enabled: bool, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.last = -1.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        pct = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        if pct - self.last < 0.5 and pct < 100.0:
            return
        self.last = pct
        fill = int(self.WIDTH * pct / 100)
        bar = "#" * fill + "." * (self.WIDTH - fill)
        self.stream.write(f"\r    ({pct:.2f}/100%) [{bar}]")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[ProgressBar]:
    bar = ProgressBar(enabled)
    try:
        yield bar
    finally:
        bar.close()


# -- opening images --------------------------------------------------------------------------


def add_common(p: Parser, *, fmt: bool = True, image_opts_flag: bool = True, share: bool = True,
               output: bool = False) -> None:
    if fmt:
        p.add_argument("-f", "--format", dest="fmt", metavar="FMT", help=FORMAT_HELP)
    if image_opts_flag:
        p.add_argument("--image-opts", action="store_true",
                       help="FILENAME is driver=FMT,file.filename=PATH[,OPTION=VALUE...] "
                            "(e.g. force_size_calc=chs|current_size for vpc)")
    if share:
        p.add_argument("-U", "--force-share", action="store_true",
                       help="open read-only even while another process (a running VM) holds "
                            "the image under qemu's image locks")
    if output:
        p.add_argument("--output", choices=["human", "json"], default="human",
                       help="output format (default human)")


def request(spec: str, fmt: str | None, use_image_opts: bool) -> OpenRequest:
    if use_image_opts:
        if fmt:
            raise UsageError("--image-opts and -f are mutually exclusive")
        return image_opts(spec)
    return OpenRequest(spec, fmt, {})


def open_arg(spec: str, fmt: str | None, use_image_opts: bool, *, mode: str = "r",
             backing: bool = True, share: bool = False) -> tuple[Image, str]:
    """Open an image named on the command line; returns it and its name for output.
    `share`: -U, open it (read-only) even while another process holds it."""
    req = request(spec, fmt, use_image_opts)
    return open_image(req.path, mode, format=req.format, backing=backing, share=share,
                      **req.options), req.path


def reject(value: Any, what: str) -> None:
    if value:
        raise UnsupportedFeatureError(what)


# -- info ------------------------------------------------------------------------------------


def cmd_info(argv: list[str]) -> int:
    from ..ops.report import chain_info, info

    p = Parser("info", "Show what an image is: format, sizes, backing file, format details.")
    add_common(p, output=True)
    p.add_argument("--backing-chain", action="store_true", help="also every backing file below")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    try:
        image, name = open_arg(a.filename, a.fmt, a.image_opts, share=a.force_share)
    except ParentMissingError:
        if a.backing_chain:
            raise
        image, name = open_arg(a.filename, a.fmt, a.image_opts, backing=False, share=a.force_share)
    with image:
        if a.backing_chain:
            infos = chain_info(image, name)
            if a.output == "json":
                print_json(infos)
            else:
                print("\n".join(human_info(i) for i in infos), end="")
        else:
            data = info(image, name)
            if a.output == "json":
                print_json(data)
            else:
                print(human_info(data), end="")
    return 0


def human_info(data: dict[str, Any]) -> str:
    lines = [f"image: {data['filename']}", f"file format: {data['format']}",
             f"virtual size: {size_to_str(data['virtual-size'])} ({data['virtual-size']} bytes)",
             f"disk size: {size_to_str(data['actual-size'])}"]
    if "cluster-size" in data:
        lines.append(f"cluster_size: {data['cluster-size']}")
    if data.get("encrypted"):
        lines.append("encrypted: yes")
    if data.get("dirty-flag"):
        lines.append("cleanly shut down: no")
    if "backing-filename" in data:
        text = f"backing file: {data['backing-filename']}"
        full = data.get("full-backing-filename")
        if full is None:
            text += " (cannot determine actual path)"
        elif full != data["backing-filename"]:
            text += f" (actual path: {full})"
        lines.append(text)
    if "backing-filename-format" in data:
        lines.append(f"backing file format: {data['backing-filename-format']}")
    specific = data.get("format-specific")
    if isinstance(specific, dict) and isinstance(specific.get("data"), dict) and specific["data"]:
        lines.append("Format specific information:")
        lines += _dump(specific["data"], 1)
    warnings = data.get("warnings")
    if warnings:
        lines.append("Warnings:")
        lines += [f"    {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def _dump(value: Any, level: int) -> list[str]:
    """qemu's human dump of format-specific data: `key with spaces: value`, nested indented."""
    pad = "    " * level
    out: list[str] = []
    items = value.items() if isinstance(value, dict) else ((f"[{i}]", v) for i, v in enumerate(value))
    for key, v in items:
        label = str(key).replace("-", " ")
        if isinstance(v, dict | list) and v:
            out.append(f"{pad}{label}:")
            out += _dump(v, level + 1)
        else:
            text = _JSON_WORDS[v] if isinstance(v, bool) or v is None else str(v)
            out.append(f"{pad}{label}: {text}")
    return out


# -- check -----------------------------------------------------------------------------------


def cmd_check(argv: list[str]) -> int:
    from ..ops.report import check

    p = Parser("check", "Check an image for consistency (and repair it with -r).\n\n"
               "Exit codes: 0 no problems, 1 check not completed, 2 corruptions, 3 only leaks, "
               "63 the format has no check.")
    add_common(p, output=True)
    p.add_argument("-q", "--quiet", action="store_true", help="no output, only the exit code")
    p.add_argument("-r", "--repair", choices=["leaks", "all"],
                   help="repair leaks only, or everything that can be repaired safely")
    p.add_argument("-T", "--cache", help="accepted for compatibility")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    if a.repair and a.force_share:
        raise UsageError("-r and -U are incompatible")
    image, name = open_arg(a.filename, a.fmt, a.image_opts, mode="r+" if a.repair else "r",
                           backing=False, share=a.force_share)
    with image:
        if not image.engine.capabilities.check:
            if not a.quiet:
                err(f"This image format does not support checks ({image.format})")
            return 63
        report = check(image, a.repair, name)
    if not a.quiet:
        _check_details(report)
        if a.output == "json":
            print_json(report.members)
        else:
            print(human_check(report.members), end="")
    return report.exit_code


def _check_details(report: Any) -> None:
    """The engine's findings, one per line on stderr (qemu prints its diagnostics there)."""
    passes = [report.fixed] if report.fixed is not None else []
    for r in passes:
        for text in r.repaired:
            print(f"Repairing: {text}", file=sys.stderr)
    final = report.result
    for text in final.corruptions:
        print(f"ERROR {text}", file=sys.stderr)
    for text in final.leaks:
        print(f"Leaked: {text}", file=sys.stderr)
    for text in final.check_errors:
        print(f"Check failed: {text}", file=sys.stderr)
    for text in final.warnings:
        print(f"Warning: {text}", file=sys.stderr)


def human_check(m: dict[str, Any]) -> str:
    out: list[str] = []
    c_fixed, l_fixed = m.get("corruptions-fixed", 0), m.get("leaks-fixed", 0)
    if c_fixed or l_fixed:
        out += ["The following inconsistencies were found and repaired:", "",
                f"    {l_fixed} leaked clusters", f"    {c_fixed} corruptions", "",
                "Double checking the fixed image now..."]
    corruptions, leaks, errors = m.get("corruptions", 0), m.get("leaks", 0), m["check-errors"]
    if not (corruptions or leaks or errors):
        out.append("No errors were found on the image.")
    if corruptions:
        out += ["", f"{corruptions} errors were found on the image.",
                "Data may be corrupted, or further writes to the image may corrupt it."]
    if leaks:
        out += ["", f"{leaks} leaked clusters were found on the image.",
                "This means waste of disk space, but no harm to data."]
    if errors:
        out += ["", f"{errors} internal errors have occurred during the check."]
    total, allocated = m.get("total-clusters", 0), m.get("allocated-clusters", 0)
    if total and allocated:
        frag, comp = m.get("fragmented-clusters", 0), m.get("compressed-clusters", 0)
        out.append(f"{allocated}/{total} = {allocated * 100 / total:.2f}% allocated, "
                   f"{frag * 100 / allocated:.2f}% fragmented, "
                   f"{comp * 100 / allocated:.2f}% compressed clusters")
    if "image-end-offset" in m:
        out.append(f"Image end offset: {m['image-end-offset']}")
    return "\n".join(out) + "\n"


# -- map -------------------------------------------------------------------------------------


def cmd_map(argv: list[str]) -> int:
    from ..ops.mapping import block_status, merged

    p = Parser("map", "Show how the guest disk is stored, through the backing chain "
               "(depth 0 = the image itself).")
    add_common(p, output=True)
    p.add_argument("-s", "--start-offset", default="0", metavar="OFFSET")
    p.add_argument("-l", "--max-length", metavar="LEN")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    start = parse_size(a.start_offset, "start offset")
    length = parse_size(a.max_length, "length") if a.max_length is not None else None
    image, _ = open_arg(a.filename, a.fmt, a.image_opts, share=a.force_share)
    with image:
        entries = merged(block_status(image, start, length))
        if a.output == "json":
            lines = [e.json_line() for e in entries]
            print("[" + ",\n".join(lines) + "]")
            return 0
        rows = [f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File"]
        for e in entries:
            if e.data and e.offset is None:
                raise DiskspecError("File contains external, encrypted or compressed clusters.")
            if e.data and not e.zero:
                rows.append(f"{_hex(e.start):<16}{_hex(e.length):<16}{_hex(e.offset or 0):<16}"
                            f"{e.image.path}")
        print("\n".join(rows))
    return 0


def _hex(value: int) -> str:
    return "0" if value == 0 else f"{value:#x}"


# -- compare ---------------------------------------------------------------------------------


def cmd_compare(argv: list[str]) -> int:
    from ..ops.compare import compare

    p = Parser("compare", "Compare the guest content of two images (any formats).\n\n"
               "Exit codes: 0 identical, 1 different, 2 bad arguments or an image cannot be "
               "opened, 4 read error.")
    add_common(p, fmt=False)
    p.add_argument("-f", "--a-format", dest="fmt_a", metavar="FMT", help="format of FILENAME1")
    p.add_argument("-F", "--b-format", dest="fmt_b", metavar="FMT", help="format of FILENAME2")
    p.add_argument("-s", "--strict", action="store_true",
                   help="images of different sizes or allocation differ")
    p.add_argument("-p", "--progress", action="store_true", help="show progress (on a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="no output, only the exit code")
    p.add_argument("-T", "--cache", help="accepted for compatibility")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename1")
    p.add_argument("filename2")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    try:
        img_a, _ = open_arg(a.filename1, a.fmt_a, a.image_opts, share=a.force_share)
    except (DiskspecError, OSError) as exc:
        err(_describe(exc))
        return 2
    with img_a:
        try:
            img_b, _ = open_arg(a.filename2, a.fmt_b, a.image_opts, share=a.force_share)
        except (DiskspecError, OSError) as exc:
            err(_describe(exc))
            return 2
        with img_b, progress_bar(a.progress and not a.quiet) as bar:
            try:
                result = compare(img_a, img_b, strict=a.strict, progress=bar)
            except (DiskspecError, OSError) as exc:
                bar.close()
                err(f"error while comparing: {_describe(exc)}")
                return 4
    if not a.quiet:
        for line in result.messages:
            print(line)
    return result.exit_code


# -- convert ---------------------------------------------------------------------------------


def cmd_convert(argv: list[str]) -> int:
    from ..ops.convert import DEFAULT_SPARSE, check_sparse_size, convert

    p = Parser("convert", "Copy the guest content of images (concatenated) into a new image, "
               "sparse: zero runs are not written.")
    add_common(p)
    p.add_argument("-O", "--target-format", dest="out_fmt", metavar="FMT",
                   help="target format (default raw; with -n probed)")
    p.add_argument("-o", "--target-format-options", dest="options", action="append", default=[],
                   metavar="OPTIONS", help="target create options (-o help lists them)")
    p.add_argument("-S", "--sparse-size", metavar="SIZE",
                   help="shortest run of zero bytes left unwritten (default 4k; 0 writes all)")
    p.add_argument("-n", "--no-create", action="store_true", help="write into an existing target")
    p.add_argument("--target-is-zero", action="store_true",
                   help="with -n: the target reads as zeros already")
    p.add_argument("-p", "--progress", action="store_true", help="show progress (on a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.add_argument("-t", "--target-cache", metavar="CACHE",
                   help="'unsafe': no final fsync of the target (qemu-img's default); any other "
                        "mode (and the default): one fsync when the target is complete")
    for flag in ("-T", "-m"):
        p.add_argument(flag, metavar="X", help="accepted for compatibility")
    p.add_argument("-W", action="store_true", help="accepted for compatibility")
    p.add_argument("-C", action="store_true", help="accepted (copy offloading is used where it applies)")
    p.add_argument("-c", "--compress", action="store_true", help="not supported")
    p.add_argument("-B", "-b", "--backing", dest="backing", metavar="BACKING_FILE",
                   help="create the target over this backing file (relative names are relative "
                        "to the target's directory) and copy only the source's top layer")
    p.add_argument("-F", "--backing-format", dest="backing_fmt", metavar="BACKING_FMT",
                   help="format of the backing file")
    p.add_argument("-l", "--snapshot", help="not supported")
    p.add_argument("-r", "--rate-limit", help="not supported")
    p.add_argument("--salvage", action="store_true", help="not supported")
    p.add_argument("--bitmaps", action="store_true", help="not supported")
    p.add_argument("--target-image-opts", action="store_true", help="not supported")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("files", nargs="*", metavar="FILENAME")
    a = p.parse_args(argv)
    out_fmt = a.out_fmt or (None if a.no_create else "raw")
    if wants_help(a.options):
        print(format_option_help(out_fmt or "raw"), end="")
        return 0
    for value, what in ((a.compress, "compression (-c)"),
                        (a.snapshot, "internal snapshots (-l)"), (a.rate_limit, "rate limits (-r)"),
                        (a.salvage, "--salvage"), (a.bitmaps, "--bitmaps"),
                        (a.target_image_opts, "--target-image-opts"), (a.object, "--object")):
        reject(value, what)
    if len(a.files) < 2:
        raise UsageError("expecting at least one source and one target file name")
    sparse = check_sparse_size(parse_size(a.sparse_size, "sparse size")) \
        if a.sparse_size is not None else DEFAULT_SPARSE
    options = parse_options(a.options)
    if a.no_create:
        if a.backing or a.backing_fmt:
            raise UsageError("-B and -F describe a new target: they have no effect with -n")
    elif options or a.backing or a.backing_fmt:
        backing = str(_backing_path(Path(a.files[-1]), a.backing)) if a.backing else None
        options = target_options(out_fmt or "raw", options, backing, a.backing_fmt,
                                 with_backing=True)
        if "parent" in options and a.backing_fmt:  # -F must name the backing file's format
            open_image(options["parent"], format=a.backing_fmt, share=a.force_share).close()
    sources: list[Image] = []
    try:
        for spec in a.files[:-1]:
            sources.append(open_arg(spec, a.fmt, a.image_opts, share=a.force_share)[0])
        with progress_bar(a.progress and not a.quiet) as bar:
            convert(sources, a.files[-1], out_fmt, options, sparse_size=sparse,
                    no_create=a.no_create, target_is_zero=a.target_is_zero, progress=bar,
                    flush=a.target_cache != "unsafe")
    finally:
        for s in sources:
            s.close()
    return 0


def target_options(fmt: str, options: dict[str, Any], backing: str | None = None,
                   backing_format: str | None = None, *, with_backing: bool = False
                   ) -> dict[str, Any]:
    """-o of convert/measure: create options without the size (the source's); a backing file
    (-B, or -o backing_file=) only `with_backing` (convert)."""
    if "size" in options:
        raise UsageError("-o size= has no meaning here: the size is the source's")
    req = create_request(fmt, None, options, backing, backing_format)
    if not with_backing:
        reject(req.backing, "a target backing file (-o backing_file=)")
    return req.options


# -- create ----------------------------------------------------------------------------------


def cmd_create(argv: list[str]) -> int:
    p = Parser("create", "Create a new image (default format raw).")
    p.add_argument("-f", "--format", dest="fmt", default="raw", metavar="FMT",
                   help="image format (default raw)")
    p.add_argument("-o", "--options", action="append", default=[], metavar="OPTIONS",
                   help="create options key=value,... (-o help lists them)")
    p.add_argument("-b", "--backing", metavar="BACKING_FILE",
                   help="backing file (relative names are relative to FILENAME's directory)")
    p.add_argument("-F", "-B", "--backing-format", dest="backing_fmt", metavar="BACKING_FMT",
                   help="format of the backing file")
    p.add_argument("-u", "--backing-unsafe", action="store_true",
                   help="accepted; the backing file is opened anyway (its size and identity "
                        "go into the new image)")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename", nargs="?")
    p.add_argument("size", nargs="?")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    if wants_help(a.options):
        print(format_option_help(a.fmt), end="")
        return 0
    if a.filename is None:
        raise UsageError("expecting a file name")
    size = parse_size(a.size) if a.size is not None else None
    backing = str(_backing_path(Path(a.filename), a.backing)) if a.backing else None
    req = create_request(a.fmt, size, parse_options(a.options), backing, a.backing_fmt)
    if req.backing is not None:
        with open_image(req.backing, format=req.backing_format) as parent:
            backing_format = parent.format
            if req.size is None:
                req.size = parent.size
    elif req.size is None:
        raise UsageError("Image creation needs a size parameter")
    if not a.quiet:
        shown = {k: v for k, v in req.options.items() if k != "parent"}
        words = [f"fmt={a.fmt}", f"size={req.size}"]
        words += [f"{k}={_opt_text(v)}" for k, v in shown.items()]
        if req.backing is not None:
            words += [f"backing_file={a.backing}", f"backing_fmt={backing_format}"]
        print(f"Formatting '{a.filename}', " + " ".join(words))
    create_image(a.filename, a.fmt, req.size, **req.options).close()
    return 0


def _backing_path(child: Path, backing: str) -> Path:
    """qemu-img resolves a relative backing name against the new image's directory; a name
    that only exists relative to the working directory is accepted too."""
    p = Path(backing)
    if p.is_absolute():
        return p
    beside = child.parent / p
    if beside.exists() or not p.exists():
        return beside
    return p


def _opt_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# -- commit ----------------------------------------------------------------------------------


def cmd_commit(argv: list[str]) -> int:
    from ..ops.commit import commit

    p = Parser("commit", "Copy what an image stores itself into its backing file.\n\n"
               "The image itself keeps its data (it reads the same either way), as with -d.")
    add_common(p, share=False)
    p.add_argument("-b", "--base", metavar="BASE",
                   help="the backing file to commit into (must be the direct backing file)")
    p.add_argument("-d", "--no-drop", action="store_true",
                   help="keep the image's data (what diskspec always does)")
    p.add_argument("-p", "--progress", action="store_true", help="accepted")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("-t", "--cache", help="accepted for compatibility")
    p.add_argument("-r", "--rate-limit", help="not supported")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.rate_limit, "rate limits (-r)")
    reject(a.object, "--object")
    req = request(a.filename, a.fmt, a.image_opts)
    with open_image(req.path, format=req.format, **req.options) as image:
        backing = image.backing
        if backing is None:
            raise DiskspecError(f"{req.path} has no backing file to commit into")
        base = _backing_path(Path(req.path), a.base) if a.base is not None else backing.path
        if not (base.exists() and os.path.samefile(base, backing.path)):
            if base.exists() and any(os.path.samefile(base, layer.path)
                                     for layer in image.chain()[2:]):
                raise UnsupportedFeatureError("committing through intermediate images (-b below "
                                              "the direct backing file)")
            raise DiskspecError(f"{a.base} is not in the backing chain of {req.path}")
    commit(req.path)
    if not a.quiet:
        print("Image committed.")
    return 0


# -- rebase ----------------------------------------------------------------------------------


def cmd_rebase(argv: list[str]) -> int:
    from ..ops.rebase import rebase

    p = Parser("rebase", "Change the backing file of an image; without -u the data that would "
               "change is first copied into the image, so its content stays the same.")
    add_common(p, image_opts_flag=False)
    p.add_argument("-b", "--backing", required=True, metavar="BACKING_FILE",
                   help='the new backing file ("" for none)')
    p.add_argument("-F", "-B", "--backing-format", dest="backing_fmt", metavar="FMT")
    p.add_argument("-u", "--unsafe", action="store_true",
                   help="only rewrite the reference (the content may change)")
    p.add_argument("-p", "--progress", action="store_true", help="show progress (on a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("-t", "--cache", help="accepted for compatibility")
    p.add_argument("-T", "--source-cache", help="accepted for compatibility")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    with progress_bar(a.progress and not a.quiet) as bar:
        rebase(a.filename, a.backing or None, fmt=a.fmt, backing_format=a.backing_fmt,
               unsafe=a.unsafe, progress=bar, share=a.force_share)
    return 0


# -- resize ----------------------------------------------------------------------------------


def cmd_resize(argv: list[str]) -> int:
    p = Parser("resize", "Change the virtual size of an image (shrinking needs --shrink).",
               usage="diskspec resize [-h] [-f FMT] [--image-opts] [--shrink] [-q] FILENAME "
                     "[+|-]SIZE")
    add_common(p, share=False)
    p.add_argument("--shrink", action="store_true", help="allow making the image smaller")
    p.add_argument("--preallocation", default="off", help="only 'off' is supported")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    # like qemu-img, the size is the last argument, taken before option parsing (so -1G works)
    if argv and argv[-1] not in ("-h", "--help"):
        size_text, argv = argv[-1], argv[:-1]
    else:
        size_text = None
    a = p.parse_args(argv)
    reject(a.object, "--object")
    if a.preallocation != "off":
        raise UnsupportedFeatureError(f"--preallocation={a.preallocation}")
    if size_text is None:
        raise UsageError("expecting a size")
    image, _ = open_arg(a.filename, a.fmt, a.image_opts, mode="r+", backing=False)
    with image:
        new_size = parse_relative_size(size_text, image.size)
        if new_size < 0:
            raise DiskspecError(f"new size {new_size} is negative")
        if new_size < image.size and not a.shrink:
            err("Use the --shrink option to perform a shrink operation.")
            err("warning: Shrinking an image will delete all data beyond the shrunken image's "
                "end. Before performing such an operation, make sure there is no important data "
                "there.")
            return 1
        image.engine.resize(new_size)
        image.flush()
    if not a.quiet:
        print("Image resized.")
    return 0


# -- measure ---------------------------------------------------------------------------------


def cmd_measure(argv: list[str]) -> int:
    from ..ops.measure import measure

    p = Parser("measure", "How large a new image file must be: for --size N (as create would "
               "make it) or for converting FILENAME.")
    add_common(p, output=True)
    p.add_argument("-O", "--target-format", dest="out_fmt", default="raw", metavar="FMT")
    p.add_argument("-o", "--target-format-options", dest="options", action="append", default=[],
                   metavar="OPTIONS")
    p.add_argument("--size", metavar="N")
    p.add_argument("-l", "--snapshot", help="not supported")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename", nargs="?")
    a = p.parse_args(argv)
    reject(a.snapshot, "internal snapshots (-l)")
    reject(a.object, "--object")
    if wants_help(a.options):
        print(format_option_help(a.out_fmt), end="")
        return 0
    if (a.size is None) == (a.filename is None):
        raise UsageError("either --size N or a FILENAME is needed (not both)")
    options = target_options(a.out_fmt, parse_options(a.options))
    if a.size is not None:
        result = measure(a.out_fmt, options, size=parse_size(a.size))
    else:
        image, _ = open_arg(a.filename, a.fmt, a.image_opts, share=a.force_share)
        with image:
            result = measure(a.out_fmt, options, source=image)
    if a.output == "json":
        print_json(result)
    else:
        print(f"required size: {result['required']}")
        print(f"fully allocated size: {result['fully-allocated']}")
    return 0


# -- dispatch --------------------------------------------------------------------------------


def cmd_codegen(argv: list[str]) -> int:
    from diskspec.codegen.generate import codegen_main

    return codegen_main(argv)


def cmd_demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main()


def cmd_dissect(argv: list[str]) -> int:
    try:
        from .dissect import main as dissect_main
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{__package__}.dissect", f"{__package__}.dissect.cli"):
            raise
        raise UnsupportedFeatureError("dissect (the runtime.dissect module is not installed)") from None
    result: int = dissect_main(argv)
    return result


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "info": cmd_info, "check": cmd_check, "map": cmd_map, "compare": cmd_compare,
    "convert": cmd_convert, "create": cmd_create, "commit": cmd_commit, "rebase": cmd_rebase,
    "resize": cmd_resize, "measure": cmd_measure, "dissect": cmd_dissect, "codegen": cmd_codegen,
    "demo": cmd_demo,
}

#: exit code for errors (bad arguments, unreadable images) per command; 1 for the others
ERROR_CODES = {"compare": 2}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnsupportedFeatureError):
        return f"not supported: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        return f"{where}: {exc.strerror}" if where is not None else exc.strerror
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """The command line on `argv` (default sys.argv[1:]); returns the exit code. Output to a
    pipe whose reader has gone is dropped, as qemu-img drops it (see pipe)."""
    with tolerant_stdout():
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"diskspec version {__version__}")
        return 0
    command, rest = args[0], args[1:]
    handler = COMMANDS.get(command)
    if handler is None:
        err(f"unknown command {command!r} (see 'diskspec --help')")
        return 2
    failure = ERROR_CODES.get(command, 1)
    started = time.monotonic()
    try:
        return handler(rest)
    except UsageError as exc:
        err(f"{exc} (see 'diskspec {command} --help')")
        return failure
    except BrokenPipeError:  # output that bypassed sys.stdout (the pipe module)
        return failure
    except (DiskspecError, OSError) as exc:
        err(_describe(exc))
        return failure
    except KeyboardInterrupt:
        err(f"interrupted after {time.monotonic() - started:.1f} s")
        return 130
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0


def run() -> NoReturn:
    """The `diskspec` command and `python -m diskspec.runtime`: main() on sys.argv, then exit."""
    code = main()
    # The interpreter's last garbage collections walk every object still alive: ~7 ms after a
    # convert, more than qemu-img's whole start-up. Nothing is left for them to free.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
