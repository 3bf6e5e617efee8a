"""The commands that change images: create, commit, rebase, resize."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DiskspecError, UnsupportedFeatureError
from ..image import create as create_image
from ..image import open as open_image
from ..ops.overwrite import Claim, create_into, must_overwrite
from .common import (
    Parser,
    UsageError,
    add_common,
    backing_path,
    err,
    open_arg,
    progress_bar,
    reject,
    request,
)
from .options import (
    create_request,
    format_option_help,
    parse_options,
    wants_help,
)
from .units import parse_relative_size, parse_size


def resize_preallocated(engine: Any, new_size: int, mode: str) -> None:
    """resize --preallocation: engines whose resize takes it (raw); the others refuse it."""
    from ..engines.raw.engine import RawEngine

    if not isinstance(engine, RawEngine):
        raise UnsupportedFeatureError(f"--preallocation={mode} for {engine.format_name} images")
    engine.resize(new_size, preallocation=mode)

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
    backing = str(backing_path(Path(a.filename), a.backing)) if a.backing else None
    req = create_request(a.fmt, size, parse_options(a.options), backing, a.backing_fmt)
    if req.backing is not None:
        with open_image(req.backing, format=req.backing_format) as parent:
            backing_format = parent.format
            if req.size is None:
                req.size = parent.size
    elif req.size is None:
        raise UsageError("Image creation needs a size parameter")
    target = Path(a.filename)
    # qemu prints "Formatting" before it creates; here it comes once every check has passed
    # (the lock of an existing file included), so a create that fails never prints it
    if must_overwrite(target):  # as qemu: written into the existing file, unless in use
        with Claim(target) as claim:
            create_into(claim, a.fmt, req.size, req.options)
    else:
        create_image(target, a.fmt, req.size, **req.options).close()
    if not a.quiet:
        shown = {k: v for k, v in req.options.items() if k != "parent"}
        words = [f"fmt={a.fmt}", f"size={req.size}"]
        words += [f"{k}={_opt_text(v)}" for k, v in shown.items()]
        if req.backing is not None:
            words += [f"backing_file={a.backing}", f"backing_fmt={backing_format}"]
        print(f"Formatting '{a.filename}', " + " ".join(words))
    return 0


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
        base = backing_path(Path(req.path), a.base) if a.base is not None else backing.path
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
    p.add_argument("--preallocation", default="off",
                   help="off (default), falloc or full: how the added bytes of a raw image "
                        "are allocated")
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
    if size_text is None:
        raise UsageError("expecting a size")
    image, _ = open_arg(a.filename, a.fmt, a.image_opts, mode="r+", backing=False, policy=a.parents)
    with image:
        new_size = parse_relative_size(size_text, image.size)
        if new_size < 0:
            raise DiskspecError("New image size must be positive")  # qemu-img's words
        if new_size < image.size and not a.shrink:
            # one line, as every failure here (qemu prints its warning on a second one): it
            # starts with qemu's sentence verbatim, which scripts match (README)
            err("Use the --shrink option to perform a shrink operation. Shrinking deletes "
                f"the data beyond the new end ({image.size - new_size} bytes).")
            return 1
        if a.preallocation != "off":
            resize_preallocated(image.engine, new_size, a.preallocation)
        else:
            image.engine.resize(new_size)
        image.flush()
    if not a.quiet:
        print("Image resized.")
    return 0


