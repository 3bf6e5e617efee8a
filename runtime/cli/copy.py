"""The commands that read two images or copy one: compare, convert."""

from __future__ import annotations

from pathlib import Path

from ..errors import DiskspecError
from ..image import Image
from ..image import open as open_image
from .common import (
    Parser,
    UsageError,
    add_common,
    add_snapshot,
    backing_path,
    describe,
    err,
    open_arg,
    progress_bar,
    reject,
    target_options,
)
from .options import (
    format_option_help,
    parse_options,
    wants_help,
)
from .snapshots import parse as parse_snapshot
from .units import parse_size

# -- compare ---------------------------------------------------------------------------------

#: the cache modes qemu-img's -t/-T accept
QEMU_CACHE_MODES = ("none", "writeback", "writethrough", "directsync", "unsafe")


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
    p.add_argument("-T", "--cache", help="one of qemu's cache modes (accepted for compatibility)")
    add_snapshot(p, what=", of FILENAME1")
    add_snapshot(p, "--b-snapshot", dest="b_snapshot", what=", of FILENAME2")
    p.add_argument("--object", action="append", help="not supported")
    p.add_argument("filename1")
    p.add_argument("filename2")
    a = p.parse_args(argv)
    reject(a.object, "--object")
    if a.cache is not None and a.cache not in QEMU_CACHE_MODES:
        err(f"Invalid source cache option: {a.cache}")  # qemu-img's words and exit code
        return 2
    try:
        img_a, _ = open_arg(a.filename1, a.fmt_a, a.image_opts, share=a.force_share,
                            policy=a.parents, snapshot=a.snapshot)
    except (DiskspecError, OSError) as exc:
        err(describe(exc))
        return 2
    with img_a:
        try:
            img_b, _ = open_arg(a.filename2, a.fmt_b, a.image_opts, share=a.force_share,
                                policy=a.parents, snapshot=a.b_snapshot)
        except (DiskspecError, OSError) as exc:
            err(describe(exc))
            return 2
        with img_b, progress_bar(a.progress and not a.quiet) as bar:
            try:
                result = compare(img_a, img_b, strict=a.strict, progress=bar)
            except (DiskspecError, OSError) as exc:
                bar.close()
                err(f"error while comparing: {describe(exc)}")
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
    p.add_argument("-l", "--snapshot", metavar="SNAPSHOT",
                   help="copy an internal snapshot of the (first) source: ID_OR_NAME, or "
                        "snapshot.id=ID[,snapshot.name=NAME] (as qemu-img)")
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
                        (a.rate_limit, "rate limits (-r)"),
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
        backing = str(backing_path(Path(a.files[-1]), a.backing)) if a.backing else None
        options = target_options(out_fmt or "raw", options, backing, a.backing_fmt,
                                 with_backing=True)
        if "parent" in options and a.backing_fmt:  # -F must name the backing file's format
            open_image(options["parent"], format=a.backing_fmt, share=a.force_share).close()
    snapshot = parse_snapshot(a.snapshot) if a.snapshot is not None else None
    if snapshot is not None and snapshot.id_or_name is not None and len(a.files) > 2:
        raise DiskspecError("No support for concatenating multiple snapshot")  # qemu's words
    sources: list[Image] = []
    try:
        for i, spec in enumerate(a.files[:-1]):
            sources.append(open_arg(spec, a.fmt, a.image_opts, share=a.force_share,
                                    policy=a.parents, snapshot=None if i else snapshot)[0])
        with progress_bar(a.progress and not a.quiet) as bar:
            convert(sources, a.files[-1], out_fmt, options, sparse_size=sparse,
                    no_create=a.no_create, target_is_zero=a.target_is_zero, progress=bar,
                    flush=a.target_cache != "unsafe")
    finally:
        for s in sources:
            s.close()
    return 0


