"""rebase leaves no leak (issue 16, item 6): after `rebase -b b.vhd c.vhd` check is clean
(exit 0, not 3) and the guest content is what qemu-io's writes made of it; the new locators
take the old ones' place and the file does not grow by their size."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import diskspec.runtime as ds_runtime
from tests.test_cli_parity import ds


def sha_of(path: Path) -> str:
    with ds_runtime.open(path, backing_policy="any") as image:
        return hashlib.sha256(image.read()).hexdigest()


def locator_areas(path: Path) -> list[tuple[int, int]]:
    with ds_runtime.open(path, backing=False) as image:
        header = image.engine.header  # type: ignore[attr-defined]
        return [(loc.platform_data_offset, loc.platform_data_space)
                for loc in header.parent_locators if loc.platform_code]


def test_rebase_leaves_no_leak(tmp_path: Path, qemu_img: str, qemu_io: str) -> None:
    mib = 1 << 20

    def io(fmt: str, path: Path, *commands: str) -> None:
        args = [qemu_io, "-f", fmt]
        for c in commands:
            args += ["-c", c]
        subprocess.run([*args, str(path)], check=True, capture_output=True)

    a, b, c = tmp_path / "a.vhd", tmp_path / "b.vhd", tmp_path / "c.vhd"
    for base, pattern in ((a, 1), (b, 2)):
        assert ds("create", "-q", "-f", "vpc", "-o", "force_size=on", base, "8M")[0] == 0
        io("vpc", base, f"write -P {pattern} {pattern * mib} {mib}")
    assert ds("create", "-q", "-f", "vpc", "-b", a, "-F", "vpc", c)[0] == 0
    with ds_runtime.open(c, "r+") as image:  # the top layer's own data
        image.seek(4 * mib)
        image.write(b"\x03" * 65536)
    # the oracle: the same writes on a raw copy of a, made by qemu-img and qemu-io
    expected = tmp_path / "expected.raw"
    subprocess.run([qemu_img, "convert", "-O", "raw", str(a), str(expected)], check=True)
    io("raw", expected, f"write -P 3 {4 * mib} 65536")
    want = hashlib.sha256(expected.read_bytes()).hexdigest()
    assert sha_of(c) == want
    areas = locator_areas(c)
    assert ds("rebase", "-b", b, c)[0] == 0
    assert ds("check", c)[0] == 0  # no leak: 3 before the fix
    assert sha_of(c) == want  # the content stayed: what a and b differ in was copied
    with ds_runtime.open(c) as image:
        assert image.backing is not None and image.backing.path.name == "b.vhd"
    assert locator_areas(c) == areas  # the new locators took the old ones' places
    # a parent much deeper down: still in the old locator areas, still clean
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    shutil.copy(b, deep / "b.vhd")
    size = c.stat().st_size
    assert ds("rebase", "--parents=any", "-u", "-b", deep / "b.vhd", c)[0] == 0
    assert ds("check", c)[0] == 0 and c.stat().st_size == size and locator_areas(c) == areas
    assert sha_of(c) == want
