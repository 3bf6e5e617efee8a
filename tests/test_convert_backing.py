"""convert -B: a new target over a backing file holds only the source's top layer.

Oracles: libvhdi reads the target with the base handed over as its parent, and must see the
source's guest content (which libvhdi reads too, over the same base); block status says
which layer each run of the target comes from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds

from .conftest import run
from .test_cli import ds_run, one_error_line
from .test_vhdx_engine import pyvhdi, vhdi_read

__all__ = ["pyvhdi"]  # the fixture, used by name

MiB = 1 << 20
EXT = {"vpc": "vhd", "vhdx": "vhdx"}


def chain(tmp_path: Path, qemu_img: str, qemu_io: str, fmt: str) -> tuple[Path, Path]:
    """A qemu-made base with data in its first 6 MiB, and a diskspec-made child over it that
    writes new data, overwrites base data, zeroes base data, and writes zeros over zeros."""
    base, child = tmp_path / f"base.{EXT[fmt]}", tmp_path / f"child.{EXT[fmt]}"
    run(qemu_img, "create", "-q", "-f", fmt, str(base), "16M")
    run(qemu_io, "-f", fmt, "-c", "write -P 0x61 0 6M", str(base))
    rng = random.Random(4)
    with ds.create(child, fmt, None, subformat="differencing", parent=base) as image:
        for at, data in ((MiB, bytes(MiB)), (3 * MiB + 512, rng.randbytes(70_000)),
                         (9 * MiB, rng.randbytes(MiB)), (12 * MiB, bytes(MiB))):
            image.seek(at)
            image.write(data)
    return base, child


def layers(path: Path) -> list[tuple[int, int, int, bool]]:
    """(start, length, depth, data) of the image's block status, from `map --output=json`."""
    code, out, errs = ds_run("map", "--output=json", path)
    assert code == 0, errs
    return [(e["start"], e["length"], e["depth"], e["data"]) for e in json.loads(out)]


@pytest.mark.parametrize("fmt", ["vpc", "vhdx"])
def test_the_target_holds_the_top_layer_over_the_backing_file(
        tmp_path: Path, qemu_img: str, qemu_io: str, pyvhdi: Any, fmt: str) -> None:
    base, child = chain(tmp_path, qemu_img, qemu_io, fmt)
    want = vhdi_read(pyvhdi, child, base)
    out = tmp_path / f"out.{EXT[fmt]}"
    code, _, errs = ds_run("convert", "-f", fmt, "-O", fmt, "-B", base.name, "-F", fmt, child, out)
    assert code == 0, errs
    assert vhdi_read(pyvhdi, out, base) == want
    info = json.loads(ds_run("info", "--output=json", out)[1])
    assert info["backing-filename"] == base.name  # relative to the target, as given
    # what the child stores itself is what the target stores, the rest is the base's; but
    # for the zeros the child stores over zeros of the base (12 MiB): not written again
    top = [(s, n, d) for s, n, d, data in layers(child) if data]
    assert (12 * MiB, MiB, 0) in top
    assert [(s, n, d) for s, n, d, data in layers(out) if data] == \
        [t for t in top if t != (12 * MiB, MiB, 0)]
    assert any(d == 1 for _, _, d in top) and any(d == 0 for _, _, d in top)


@pytest.mark.parametrize("fmt", ["vpc", "vhdx"])
def test_a_standalone_source_over_a_backing_file(tmp_path: Path, qemu_img: str, qemu_io: str,
                                                 pyvhdi: Any, fmt: str) -> None:
    """Everything of a source without a backing file is its top layer: its data is copied,
    and its zeros are written where the backing file would show through, nowhere else."""
    base, child = chain(tmp_path, qemu_img, qemu_io, fmt)
    flat = tmp_path / f"flat.{EXT[fmt]}"
    assert ds_run("convert", "-f", fmt, "-O", fmt, child, flat)[0] == 0
    out = tmp_path / f"out.{EXT[fmt]}"
    assert ds_run("convert", "-O", fmt, "-B", base, flat, out)[0] == 0
    assert vhdi_read(pyvhdi, out, base) == vhdi_read(pyvhdi, flat)
    # written: the source's data, and its zeros over the base's data (0-6 MiB); not its
    # zeros where the base reads as zeros too (6-9 MiB and past 10 MiB)
    written = [(s, s + n) for s, n, d, data in layers(out) if data and d == 0]
    assert written and all(b <= 6 * MiB or 9 * MiB <= a < b <= 10 * MiB for a, b in written)


def test_backing_file_errors(tmp_path: Path, qemu_img: str, qemu_io: str) -> None:
    base, child = chain(tmp_path, qemu_img, qemu_io, "vpc")
    cases: list[tuple[list[str | Path], str]] = [
        (["-O", "raw", "-B", base, child, tmp_path / "x.raw"], "not supported: a backing file for raw"),
        (["-O", "vpc", "-B", base, child, child, tmp_path / "x.vhd"], "exactly one source"),
        (["-n", "-O", "vpc", "-B", base, child, base], "no effect with -n"),
        (["-O", "vpc", "-B", base, "-F", "vhdx", child, tmp_path / "x.vhd"], "VHDX"),
    ]
    for args, message in cases:
        code, _, errs = ds_run("convert", *args)
        assert code == 1 and message in one_error_line(errs), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vhd", "child.vhd"]
