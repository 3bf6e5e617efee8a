"""`diskspec demo`: the main job on a built-in example, in one go.

Creates a small VHDX, writes a pattern through the file interface, dissects it, converts it
to a dynamic VHD, compares the two and shows the VHD's info -- each step printed as the
command a user would type. The files are made in a temporary directory, removed at the end,
unless --keep DIR names a directory to make (and keep) them in.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import diskspec.runtime as ds

from ..errors import DiskspecError

SIZE = 64 << 20
NAMES = ("example.vhdx", "example.vhd")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diskspec demo",
        description="Create a small VHDX, write a pattern, dissect it, convert it to a VHD, "
                    "compare the two and show info -- each step printed as the command a user "
                    "would type. The files live in a temporary directory removed at the end, "
                    "unless --keep DIR.")
    p.add_argument("--keep", metavar="DIR", type=Path,
                   help="make example.vhdx and example.vhd in DIR (created if missing) and keep "
                        "them; existing files of those names are refused")
    return p


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    """The directory the demo works in, as the current directory (so every step shows the
    files' short names, never a path that is gone by the time the user reads it)."""
    before = Path.cwd()
    with contextlib.ExitStack() as stack:
        if keep is None:
            where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="diskspec-demo-")))
        else:
            where = keep
            where.mkdir(parents=True, exist_ok=True)
            for name in NAMES:
                if (where / name).exists():
                    raise DiskspecError(f"{where / name} exists; the demo does not overwrite it")
        os.chdir(where)
        try:
            yield where
        finally:
            os.chdir(before)


def main(argv: Sequence[str] = ()) -> int:
    from .main import main as cli

    args = parser().parse_args(list(argv))
    with _workdir(args.keep) as where:
        vhdx_name, vhd_name = NAMES
        print(f"$ python: diskspec.runtime.create({vhdx_name!r}, 'vhdx', {SIZE}) and write")
        with ds.create(vhdx_name, "vhdx", SIZE, block_size=1 << 20) as disk:
            for i, offset in enumerate((0, 3 << 20, SIZE - 4096)):
                disk.seek(offset)
                disk.write(bytes([0x41 + i]) * 4096)
        steps = [
            ["dissect", "--brief", "--no-gaps", vhdx_name],
            ["convert", "-f", "vhdx", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", vhdx_name,
             vhd_name],
            ["compare", vhdx_name, vhd_name],
            ["map", vhd_name],
            ["info", vhd_name],
        ]
        for step in steps:
            print(f"\n$ diskspec {' '.join(step)}", flush=True)
            code = cli(step)
            if code != 0:
                print(f"diskspec demo: step {step[0]} exited {code}")
                return code
        if args.keep is None:
            print("\n(the files were made in a temporary directory, now removed; "
                  "`diskspec demo --keep DIR` keeps them)")
        else:
            print(f"\n(the files are kept in {where.resolve()})")
    return 0
