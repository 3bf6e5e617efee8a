"""`diskspec demo`: the main job on a built-in example, in one go.

Creates a small VHDX, writes a pattern through the file interface, dissects it, converts it
to a dynamic VHD, compares the two and shows the VHD's info -- each step printed as the
command a user would type.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import diskspec.runtime as ds

SIZE = 64 << 20


def main() -> int:
    from .main import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        vhdx_path, vhd_path = Path(tmp) / "example.vhdx", Path(tmp) / "example.vhd"
        print(f"$ python: diskspec.runtime.create({vhdx_path.name!r}, 'vhdx', {SIZE}) and write")
        with ds.create(vhdx_path, "vhdx", SIZE, block_size=1 << 20) as disk:
            for i, offset in enumerate((0, 3 << 20, SIZE - 4096)):
                disk.seek(offset)
                disk.write(bytes([0x41 + i]) * 4096)
        steps = [
            ["dissect", "--brief", "--no-gaps", str(vhdx_path)],
            ["convert", "-f", "vhdx", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", str(vhdx_path),
             str(vhd_path)],
            ["compare", str(vhdx_path), str(vhd_path)],
            ["map", str(vhd_path)],
            ["info", str(vhd_path)],
        ]
        for args in steps:
            print(f"\n$ diskspec {' '.join(a if '/' not in a else Path(a).name for a in args)}",
                  flush=True)
            code = cli(args)
            if code != 0:
                print(f"diskspec demo: step {args[0]} exited {code}")
                return code
    return 0
