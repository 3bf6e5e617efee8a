"""The commands that look at an image: info, check, map, measure."""

from __future__ import annotations

import sys
from typing import Any

from ..errors import DiskspecError
from .common import (
    JSON_WORDS,
    Parser,
    UsageError,
    add_common,
    add_snapshot,
    err,
    open_arg,
    print_json,
    reject,
    target_options,
)
from .options import (
    format_option_help,
    parse_options,
    wants_help,
)
from .units import parse_size, size_to_str

# -- info ------------------------------------------------------------------------------------


def cmd_info(argv: list[str]) -> int:
    from ..ops.report import chain_info, info

    p = Parser("info", "Show what an image is: format, sizes, backing file, format details.")
    add_common(p, output=True)
    p.add_argument("--backing-chain", action="store_true", help="also every backing file below")
    add_snapshot(p)
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    # like qemu-img: the backing chain is opened only when asked for (a name stored in an
    # image is shown, not followed)
    image, name = open_arg(a.filename, a.fmt, a.image_opts, backing=a.backing_chain,
                           share=a.force_share, policy=a.parents, snapshot=a.snapshot)
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
            text = JSON_WORDS[v] if isinstance(v, bool) or v is None else str(v)
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
                           backing=False, share=a.force_share, policy=a.parents)
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
    add_snapshot(p, what=" (map's -l is qemu's --max-length)")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    start = parse_size(a.start_offset, "start offset")
    length = parse_size(a.max_length, "length") if a.max_length is not None else None
    image, _ = open_arg(a.filename, a.fmt, a.image_opts, share=a.force_share, policy=a.parents,
                        snapshot=a.snapshot)
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
        image, _ = open_arg(a.filename, a.fmt, a.image_opts, share=a.force_share, policy=a.parents)
        with image:
            result = measure(a.out_fmt, options, source=image)
    if a.output == "json":
        print_json(result)
    else:
        print(f"required size: {result['required']}")
        print(f"fully allocated size: {result['fully-allocated']}")
        if "bitmaps" in result:
            print(f"bitmaps size: {result['bitmaps']}")
    return 0


