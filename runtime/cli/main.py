"""The `diskspec` command line (also `python -m diskspec.runtime`): qemu-img's commands with
qemu-img's options, JSON members and exit codes, plus codegen, demo and dissect.

This module dispatches; each group of commands lives in its own module (inspect: info, check,
map, measure; copy: compare, convert; modify: create, commit, rebase, resize; extra: dd,
bench, snapshot, amend; tools: codegen, demo, dissect), imported only when its command runs.
They parse arguments and print; the work is done by diskspec.runtime.ops and the engines.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from ..errors import DiskspecError
from . import objects
from .common import UsageError, describe, err
from .pipe import tolerant_stdout

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
  dd       [-U] [-f FMT] [-O OUTPUT_FMT] [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS]
           if=INPUT of=OUTPUT
  bench    [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-n] [--no-drain] [-o OFFSET]
           [--pattern=BYTE] [-q] [-s SIZE] [-S STEP] [-t CACHE] [-w] [-U] FILENAME
  snapshot [-q] [-U] [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILENAME
  amend    [-p] [-q] [-f FMT] [-t CACHE] [--force] -o OPTIONS FILENAME

other commands:
  dissect  the forensic view of an image's structures (see `diskspec dissect --help`)
  codegen [--check] [SPEC...]   regenerate formats/*.py from formats/*.ksy
  demo [--keep DIR]             create a VHDX, write, dissect, convert to VHD, compare, info

Formats (-f, -O, -F): raw, vpc (alias vhd), and every engine registered since; without -f
the format is probed from the content (raw when nothing else matches; a file of a format
with no engine, such as qcow2, QED or VMDK, is refused rather than read as raw: -f raw does).
Sizes: bytes, or with a suffix k, M, G, T, P, E (powers of 1024); resize also takes +N/-N.
Images are locked as QEMU locks them: one a running VM writes is refused, unless -U (info,
check, map, compare, convert, measure, rebase) opens it read-only anyway.
--object secret,id=ID,data=TEXT|file=PATH[,format=raw|base64] is accepted by every qemu-img
command (kept for encrypted images; unused ones ignored); other object types are refused.
-o help lists a format's create options. --image-opts takes FILENAME as
driver=FMT,file.filename=PATH[,OPTION=VALUE...], e.g. the VHD size rule:
driver=vpc,file.filename=disk.vhd,force_size_calc=chs|current_size (or size_rule=auto|chs|current_size).

Exit codes: 0 success; 1 failure (bad arguments, unreadable or damaged image, unsupported
feature: one line "diskspec: ..." on stderr). check: 0 no problems, 1 check not completed,
2 corruptions found (remaining after -r), 3 only leaks remain, 63 format has no check.
compare: 0 identical, 1 different, 2 cannot open an image, 4 read error.
dissect: 0 no problem found, 2 problems found (damage or a failed check), 1 could not run.
130: interrupted (Ctrl-C; a partly converted new target is removed).

Run `diskspec COMMAND --help` for the options of a command.
"""


#: command -> the module (of this package) and function that run it
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("inspect", "cmd_info"), "check": ("inspect", "cmd_check"), "map": ("inspect", "cmd_map"),
    "measure": ("inspect", "cmd_measure"), "compare": ("copy", "cmd_compare"),
    "convert": ("copy", "cmd_convert"), "create": ("modify", "cmd_create"),
    "commit": ("modify", "cmd_commit"), "rebase": ("modify", "cmd_rebase"),
    "resize": ("modify", "cmd_resize"), "dissect": ("tools", "cmd_dissect"),
    "codegen": ("tools", "cmd_codegen"), "demo": ("tools", "cmd_demo"),
    "dd": ("extra", "cmd_dd"), "bench": ("extra", "cmd_bench"),
    "snapshot": ("extra", "cmd_snapshot"), "amend": ("extra", "cmd_amend"),
}


#: diskspec's own commands (not qemu-img's: no --object)
OWN_COMMANDS = {"codegen", "demo", "dissect"}


def handler_of(command: str) -> Callable[[list[str]], int] | None:
    where = COMMANDS.get(command)
    if where is None:
        return None
    handler: Callable[[list[str]], int] = getattr(
        importlib.import_module(f".{where[0]}", __package__), where[1])
    return handler



def main(argv: Sequence[str] | None = None) -> int:
    """The command line on `argv` (default sys.argv[1:]); returns the exit code. Output to a
    pipe whose reader has gone is dropped, as qemu-img drops it (see pipe)."""
    with tolerant_stdout():
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(args: list[str]) -> int:
    if not args:  # qemu-img: "Not enough arguments", exit 1; the help says more
        print(USAGE, end="", file=sys.stderr)
        err("Not enough arguments")
        return 1
    if args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"diskspec version {__version__}")
        return 0
    command, rest = args[0], args[1:]
    handler = handler_of(command)
    if handler is None:
        err(f"Command not found: {command} (see 'diskspec --help')")  # qemu-img's words, exit 1
        return 1
    started = time.monotonic()
    if command not in OWN_COMMANDS:  # qemu-img's --object, for every one of its verbs
        try:
            rest, objects.CURRENT = objects.take_objects(rest)
        except DiskspecError as exc:
            err(describe(exc))
            return 2 if command == "compare" else 1  # qemu-img compare: 2 for an object error
    try:
        return handler(rest)
    except UsageError as exc:
        err(f"{exc} (see 'diskspec {command} --help')")
        return 1
    except BrokenPipeError:  # output that bypassed sys.stdout (the pipe module)
        return 1
    except (DiskspecError, OSError) as exc:
        err(describe(exc))
        return 1
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
