"""What every command shares: the argument parser (errors as one line), output helpers,
progress, and opening the images named on the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from ..errors import DiskspecError, UnsupportedFeatureError
from ..image import Image
from ..image import open as open_image
from ..policy import DEFAULT, POLICIES
from .options import (
    OpenRequest,
    create_request,
    image_opts,
    json_filename,
)
from .snapshots import SnapshotRef, snapshot_id
from .snapshots import parse as parse_snapshot

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

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Options anywhere among the arguments, as qemu-img's getopt (with permutation)
        takes them: `convert a.raw -O vpc b.vhd`; `--` ends the options."""
        return self.parse_intermixed_args(args, namespace)


# -- output helpers --------------------------------------------------------------------------


def err(message: str) -> None:
    print(f"diskspec: {message}", file=sys.stderr)


JSON_WORDS = {True: "true", False: "false", None: "null"}  # JSON's spelling in human output


def print_json(value: Any) -> None:
    import json  # here, not at start-up: most commands print no JSON (~1 ms per start)

    print(json.dumps(value, indent=4))


class ProgressBar:
    """qemu-img's progress on standard output: a bar after `    (NN.NN/100%)` on a terminal;
    elsewhere (a pipe, a file) exactly qemu's `    (NN.NN/100%)\r` lines, which tools parse:
    0.00 first, then at every step of more than MIN_SKIP percent, 100.00 last, then a newline."""

    WIDTH = 30
    MIN_SKIP = 1.0  # qemu-img convert's step (percent)

    def __init__(self, enabled: bool, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.terminal = enabled and self.stream.isatty()
        self.last = -1.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        pct = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        if self.shown and pct - self.last <= self.MIN_SKIP and pct < 100.0:
            return
        if self.shown and pct == self.last:
            return
        self.last = pct
        if self.terminal:
            fill = int(self.WIDTH * pct / 100)
            bar = "#" * fill + "." * (self.WIDTH - fill)
            self.stream.write(f"\r    ({pct:.2f}/100%) [{bar}]")
        else:
            self.stream.write(f"    ({pct:.2f}/100%)\r")
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
    bar(0, 1)  # qemu prints 0.00 before any work
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
    p.add_argument("--parents", choices=POLICIES, default=DEFAULT,
                   help="where the parent (backing) files an image names may be: 'confined' "
                        "(default: under the image's directory, no raw file unless named) or "
                        "'any' (wherever the image says, as qemu-img)")


SNAPSHOT_HELP = ("read an internal snapshot instead of the active layer: ID_OR_NAME, or "
                 "snapshot.id=ID[,snapshot.name=NAME] (as convert -l)")


def add_snapshot(p: Parser, *flags: str, dest: str = "snapshot", what: str = "") -> None:
    """--snapshot (qemu-img has none here; the same text as convert's -l)."""
    p.add_argument(*(flags or ("--snapshot",)), dest=dest, metavar="SNAPSHOT",
                   type=parse_snapshot, help=SNAPSHOT_HELP + what)


def request(spec: str, fmt: str | None, use_image_opts: bool) -> OpenRequest:
    if use_image_opts:
        if fmt:
            raise UsageError("--image-opts and -f are mutually exclusive")
        return image_opts(spec)
    if spec.startswith("json:"):  # qemu's json: pseudo-filename
        req = json_filename(spec)
        if fmt and req.format and fmt != req.format:
            raise UsageError(f"-f {fmt} and the json: driver {req.format!r} disagree")
        return OpenRequest(req.path, req.format or fmt, req.options)
    return OpenRequest(spec, fmt, {})


def open_arg(spec: str, fmt: str | None, use_image_opts: bool, *, mode: str = "r",
             backing: bool = True, share: bool = False, policy: str = DEFAULT,
             snapshot: SnapshotRef | None = None) -> tuple[Image, str]:
    """Open an image named on the command line; returns it and its name for output.
    `share`: -U, open it (read-only) even while another process holds it; `policy`: the
    backing policy (--parents); `snapshot`: open that internal snapshot (read-only) instead
    of the active layer."""
    req = request(spec, fmt, use_image_opts)
    try:
        image = open_image(req.path, mode, format=req.format, backing=backing, share=share,
                           backing_policy=policy, **req.options)
    except (DiskspecError, OSError) as exc:
        could_not_open(exc, req.path)
        raise
    if snapshot is None:
        return image, req.path
    with image:  # found by ID or name in the table, then opened by its ID
        wanted, fmt_found = snapshot_id(image, snapshot), image.format
    return open_image(req.path, mode, format=fmt_found, backing=backing, share=share,
                      backing_policy=policy, snapshot=wanted, **req.options), req.path


def could_not_open(exc: BaseException, path: str) -> None:
    """Give an error opening `path` qemu-img's form, which scripts match: "Could not open
    'PATH': REASON" (a missing file is qemu's "Could not open 'PATH': Could not open 'PATH':
    No such file or directory")."""
    text = describe(exc)
    if text.startswith("Could not open "):
        return
    for prefix in (f"{path}: ", f"'{path}': "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text == "no such file" or (isinstance(exc, FileNotFoundError) and exc.filename == path):
        text = f"Could not open '{path}': No such file or directory"
    exc.args = (f"Could not open '{path}': {text}",)
    if isinstance(exc, OSError):
        exc.strerror, exc.filename = exc.args[0], None
    exc.described = True  # type: ignore[attr-defined]


def reject(value: Any, what: str) -> None:
    if value:
        raise UnsupportedFeatureError(what)


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


def backing_path(child: Path, backing: str) -> Path:
    """qemu-img resolves a relative backing name against the new image's directory; a name
    that only exists relative to the working directory is accepted too."""
    p = Path(backing)
    if p.is_absolute():
        return p
    beside = child.parent / p
    if beside.exists() or not p.exists():
        return beside
    return p


def describe(exc: BaseException) -> str:
    if getattr(exc, "described", False):  # already in its final form (could_not_open)
        return str(exc.args[0])
    if isinstance(exc, UnsupportedFeatureError):
        return f"not supported: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        return f"{where}: {exc.strerror}" if where is not None else exc.strerror
    return str(exc) or type(exc).__name__
