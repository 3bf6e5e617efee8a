"""The qemu-img compatible command line against qemu-img itself.

Golden comparisons: `info`, `map` (--output=json and human) and `compare` print what
qemu-img 7.2 prints on the same raw and vpc images (field by field where both define a
field); `qemu-img check` cannot check vpc (exit 63), so `check` is compared with what the
images hold. Convert matrix raw / vpc fixed / vpc dynamic -> each other: guest sha256 equal
through `qemu-img convert -O raw` as the oracle; sparse targets stay sparse (st_blocks);
failures leave no target behind. Errors: one line on stderr, documented exit codes.

Most commands run in-process through cli.main (fast); a few through
`python -m diskspec.runtime` to prove the real entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import diskspec.runtime as ds
from diskspec.formats import vhd, vhdx
from diskspec.runtime.cli import main as cli
from diskspec.runtime.cli.common import ProgressBar
from diskspec.runtime.cli.units import parse_size, size_to_str
from diskspec.runtime.engine import Engine
from diskspec.runtime.errors import DiskspecError, UnsupportedFeatureError

from .conftest import run

KiB = 1 << 10
MiB = 1 << 20
SIZE = "12M"


# -- helpers ---------------------------------------------------------------------------------


def ds_run(*args: str | Path) -> tuple[int, str, str]:
    """diskspec in-process: (exit code, stdout, stderr)."""
    out, errs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), errs.getvalue()


def ds_proc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """diskspec as a process (python -m diskspec.runtime)."""
    return subprocess.run([sys.executable, "-m", "diskspec.runtime", *map(str, args)],
                          capture_output=True, text=True, check=False)


def ds_json(*args: str | Path) -> Any:
    code, out, errs = ds_run(*args)
    assert code == 0, errs
    return json.loads(out)


def qemu(qemu_img: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([qemu_img, *map(str, args)], capture_output=True, text=True, check=False)


def qemu_json(qemu_img: str, *args: str | Path) -> Any:
    return json.loads(run(qemu_img, *map(str, args)))


def guest(qemu_img: str, path: Path, fmt: str) -> bytes:
    """The guest content as qemu-img reads it (convert -O raw)."""
    out = path.with_name(path.name + ".oracle.raw")
    run(qemu_img, "convert", "-f", fmt, "-O", "raw", str(path), str(out))
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def guest_sha(qemu_img: str, path: Path, fmt: str, size: int | None = None) -> str:
    """sha256 of the guest content (of its first `size` bytes, the rest must be zeros)."""
    data = guest(qemu_img, path, fmt)
    if size is not None:
        assert len(data) >= size and not any(data[size:]), "the grown part is not zero"
        data = data[:size]
    return hashlib.sha256(data).hexdigest()


def one_error_line(errs: str) -> str:
    lines = errs.strip().splitlines()
    assert len(lines) == 1, errs
    assert lines[0].startswith("diskspec: "), errs
    assert "Traceback" not in errs
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- images made by qemu ---------------------------------------------------------------------

#: (pattern, offset, length): data in several blocks, a run of written zeros, the last sector
WRITES = [("0x5a", 0, 4096), ("0x11", 1 * MiB + 512, 70000), ("0x00", 4 * MiB, 2 * MiB),
          ("0x22", 6 * MiB - 4096, 8192), ("0x33", 9 * MiB, 1 * MiB)]

KINDS = {  # name: (format, qemu-img create options)
    "raw": ("raw", ""),
    "vpc-fixed": ("vpc", "subformat=fixed"),
    "vpc-dynamic": ("vpc", "subformat=dynamic"),
    "vhdx-dynamic": ("vhdx", "subformat=dynamic"),
}
#: qemu's vhdx driver reports the whole disk as data without offsets; ours maps it for real
QEMU_MAPS = [k for k in KINDS if not k.startswith("vhdx")]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, qemu_img: str, qemu_io: str
           ) -> dict[str, Path]:
    """One qemu-made image of each kind with the same writes (absolute paths)."""
    base = tmp_path_factory.mktemp("qemu-images")
    out = {}
    for name, (fmt, options) in KINDS.items():
        path = base / f"{name}.img"
        args = [qemu_img, "create", "-q", "-f", fmt]
        if options:
            args += ["-o", options]
        run(*args, str(path), SIZE)
        writes: list[str] = []
        for pattern, offset, length in WRITES:
            writes += ["-c", f"write -P {pattern} {offset} {length}"]
        run(qemu_io, "-f", fmt, *writes, str(path))
        out[name] = path
    return out


def fmt_of(kind: str) -> str:
    return KINDS[kind][0]


# -- info ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_info_json_matches_qemu(images: dict[str, Path], qemu_img: str, kind: str) -> None:
    path, fmt = images[kind], fmt_of(kind)
    theirs = qemu_json(qemu_img, "info", "--output=json", "-f", fmt, path)
    ours = ds_json("info", "--output=json", "-f", fmt, path)
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    for key in theirs:
        assert ours[key] == theirs[key], key
        assert type(ours[key]) is type(theirs[key]), key
    # probing finds the same format (qemu probes a fixed VHD as raw; we read its footer)
    assert ds_json("info", "--output=json", path)["format"] == fmt


@pytest.mark.parametrize("kind", list(KINDS))
def test_info_human_matches_qemu(images: dict[str, Path], qemu_img: str, kind: str) -> None:
    path, fmt = images[kind], fmt_of(kind)
    theirs = run(qemu_img, "info", "-f", fmt, str(path))
    code, ours, _ = ds_run("info", "-f", fmt, path)
    assert code == 0
    assert ours.startswith(theirs)  # ours may add a "Format specific information" section


def test_info_image_opts_size_rule(tmp_path: Path, qemu_img: str) -> None:
    """--image-opts force_size_calc selects the VHD size rule, as in qemu."""
    path = tmp_path / "sized.vhd"
    run(qemu_img, "create", "-q", "-f", "vpc", str(path), "64M")  # geometry 964/8/17: 67125248
    data = bytearray(path.read_bytes())
    footer = vhd.Footer.parse(data, len(data) - 512)
    footer.current_size = 64 * MiB  # the two size rules now disagree
    data[:512] = data[-512:] = footer.update_checksum().build()
    path.write_bytes(data)
    for rule in ("chs", "current_size"):
        spec = f"driver=vpc,file.filename={path},force_size_calc={rule}"
        theirs = qemu_json(qemu_img, "info", "--output=json", "--image-opts", spec)
        ours = ds_json("info", "--output=json", "--image-opts", spec)
        assert ours["virtual-size"] == theirs["virtual-size"], rule
    sizes = {ds_json("info", "--output=json", "--image-opts",
                     f"driver=vpc,file.filename={path},size_rule={rule}")["virtual-size"]
             for rule in ("chs", "current_size")}
    assert len(sizes) == 2  # the image was chosen so that the two rules differ
    code, _, errs = ds_run("info", "--image-opts", "-f", "vpc", f"driver=vpc,file.filename={path}")
    assert code == 1 and "mutually exclusive" in one_error_line(errs)


def test_info_backing_chain_and_missing_parent(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhd"
    child = tmp_path / "child.vhd"
    assert ds_run("create", "-q", "-f", "vpc", parent, "8M")[0] == 0
    assert ds_run("create", "-q", "-f", "vpc", "-b", "parent.vhd", "-F", "vpc", child)[0] == 0
    chain = ds_json("info", "--output=json", "--backing-chain", child)
    assert [i["filename"] for i in chain] == [str(child), str(parent)]
    top = chain[0]
    assert top["backing-filename"] == "parent.vhd"
    assert top["full-backing-filename"] == str(parent)
    assert top["backing-filename-format"] == "vpc"
    assert top["virtual-size"] == chain[1]["virtual-size"]
    parent.rename(tmp_path / "gone.vhd")
    alone = ds_json("info", "--output=json", child)  # info works without the parent
    assert alone["backing-filename"] == "parent.vhd" and "full-backing-filename" not in alone
    code, out, _ = ds_run("info", child)
    assert "backing file: parent.vhd (cannot determine actual path)" in out
    code, _, errs = ds_run("map", child)  # reading needs it
    assert code == 1 and "parent" in one_error_line(errs)


# -- map -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", QEMU_MAPS)
def test_map_matches_qemu(images: dict[str, Path], qemu_img: str, kind: str) -> None:
    path, fmt = images[kind], fmt_of(kind)
    for output in ("json", "human"):
        theirs = run(qemu_img, "map", f"--output={output}", "-f", fmt, str(path))
        code, ours, errs = ds_run("map", f"--output={output}", "-f", fmt, path)
        assert code == 0, errs
        assert ours == theirs, output  # the same text, line by line
    entries = json.loads(ours if output == "json" else run(qemu_img, "map", "--output=json", "-f",
                                                           fmt, str(path)))
    assert sum(e["length"] for e in entries) == ds_json("info", "--output=json", path)["virtual-size"]


def test_map_vhdx_is_real_block_status(tmp_path: Path, qemu_img: str, qemu_io: str) -> None:
    path = tmp_path / "map.vhdx"
    run(qemu_img, "create", "-q", "-f", "vhdx", str(path), "64M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 0x5a 0 4096", "-c", "write -P 1 40M 1M", str(path))
    theirs = qemu_json(qemu_img, "map", "--output=json", "-f", "vhdx", path)
    assert [(e["data"], e["zero"]) for e in theirs] == [(True, False)]  # qemu: all data
    ours = ds_json("map", "--output=json", "-f", "vhdx", path)
    assert sum(e["length"] for e in ours) == theirs[0]["length"]
    content = guest(qemu_img, path, "vhdx")
    for e in ours:
        piece = content[e["start"] : e["start"] + e["length"]]
        if e["zero"]:
            assert not any(piece)
        else:
            assert e["data"] and "offset" in e
            with open(path, "rb") as f:
                f.seek(e["offset"])
                assert f.read(e["length"]) == piece
    assert any(e["zero"] for e in ours) and any(not e["zero"] for e in ours)


def test_map_window(images: dict[str, Path], qemu_img: str) -> None:
    path = images["vpc-dynamic"]
    args = ["--output=json", "-f", "vpc", "--start-offset=1M", "--max-length=3M"]
    assert ds_run("map", *args, path)[1] == run(qemu_img, "map", *args, str(path))


def test_map_follows_the_backing_chain(tmp_path: Path) -> None:
    parent = tmp_path / "p.vhd"
    child = tmp_path / "c.vhd"
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", parent, "8M")
    with ds.open(parent, "r+") as image:
        image.seek(3 * MiB)
        image.write(b"\x01" * MiB)
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", "-b", parent, "-F", "vpc", child)
    with ds.open(child, "r+") as image:
        image.seek(0)
        image.write(b"\x02" * 4096)
    entries = ds_json("map", "--output=json", child)
    by_start = {e["start"]: e for e in entries}
    assert by_start[0]["depth"] == 0 and by_start[0]["data"] and not by_start[0]["zero"]
    assert by_start[3 * MiB]["depth"] == 1 and by_start[3 * MiB]["data"]
    assert all(e["present"] for e in entries)  # the parent's unallocated blocks read as zero
    assert any(e["depth"] == 1 and e["zero"] and not e["data"] for e in entries)
    code, human, _ = ds_run("map", child)
    assert str(child) in human and str(parent) in human


# -- check -----------------------------------------------------------------------------------


def test_check_vhdx_matches_qemu(images: dict[str, Path], qemu_img: str) -> None:
    path = images["vhdx-dynamic"]
    theirs = qemu(qemu_img, "check", "--output=json", "-f", "vhdx", path)
    code, out, _ = ds_run("check", "--output=json", "-f", "vhdx", path)
    assert code == theirs.returncode == 0
    ours, expected = json.loads(out), json.loads(theirs.stdout)
    for key in expected:
        assert ours[key] == expected[key], key


def test_check_is_not_supported_where_qemu_has_none(images: dict[str, Path], qemu_img: str) -> None:
    assert qemu(qemu_img, "check", "-f", "vpc", images["vpc-dynamic"]).returncode == 63
    theirs = qemu(qemu_img, "check", "-f", "raw", images["raw"])
    code, _, errs = ds_run("check", "-f", "raw", images["raw"])
    assert code == theirs.returncode == 63
    assert "does not support checks" in one_error_line(errs)


@pytest.mark.parametrize("kind", ["vpc-fixed", "vpc-dynamic"])
def test_check_clean_vhd(images: dict[str, Path], kind: str) -> None:
    path = images[kind]
    report = ds_json("check", "--output=json", path)
    assert report["check-errors"] == 0 and "corruptions" not in report and "leaks" not in report
    assert report["filename"] == str(path) and report["format"] == "vpc"
    assert report["image-end-offset"] == path.stat().st_size
    if kind == "vpc-dynamic":  # 2 MiB blocks; WRITES touch blocks 0, 2, 3 and 4
        assert report["total-clusters"] == 7 and report["allocated-clusters"] == 4
    code, out, _ = ds_run("check", path)
    assert code == 0 and out.startswith("No errors were found on the image.\n")
    assert ds_run("check", "-q", path) == (0, "", "")


def test_check_leaks_and_repair(tmp_path: Path, images: dict[str, Path], qemu_img: str) -> None:
    path = tmp_path / "leaky.vhd"
    data = images["vpc-dynamic"].read_bytes()
    path.write_bytes(data[:-512] + bytes(8192) + data[-512:])  # unreferenced space before the footer
    before = guest_sha(qemu_img, path, "vpc")
    report = ds_json_code("check", "--output=json", path, code=3)
    assert report["leaks"] == 1 and "corruptions" not in report
    code, out, errs = ds_run("check", path)
    assert code == 3 and "1 leaked clusters were found on the image." in out and "Leaked" in errs
    report = ds_json_code("check", "--output=json", "-r", "leaks", path, code=0)
    assert report["leaks-fixed"] == 1 and "leaks" not in report
    assert path.stat().st_size == len(data)
    assert guest_sha(qemu_img, path, "vpc") == before


def test_check_corruption_and_repair(tmp_path: Path, images: dict[str, Path], qemu_img: str) -> None:
    path = tmp_path / "bad.vhd"
    data = bytearray(images["vpc-dynamic"].read_bytes())
    data[100] ^= 1  # the footer copy at offset 0: bad checksum
    path.write_bytes(data)
    assert ds_json_code("check", "--output=json", path, code=2)["corruptions"] == 1
    # -r leaks never touches corruptions
    assert ds_json_code("check", "--output=json", "-r", "leaks", path, code=2)["corruptions"] == 1
    assert path.read_bytes() == data
    code, out, _ = ds_run("check", "-r", "all", path)
    assert code == 0
    assert "The following inconsistencies were found and repaired:" in out
    assert "    1 corruptions" in out and "No errors were found on the image." in out
    assert ds_json_code("check", "--output=json", path, code=0)["check-errors"] == 0
    assert guest_sha(qemu_img, path, "vpc") == guest_sha(qemu_img, images["vpc-dynamic"], "vpc")


def ds_json_code(*args: str | Path, code: int) -> Any:
    got, out, errs = ds_run(*args)
    assert got == code, (got, out, errs)
    return json.loads(out)


# -- convert ---------------------------------------------------------------------------------

TARGETS = {  # name: (-O, -o)
    "raw": ("raw", None),
    "vpc-fixed": ("vpc", "subformat=fixed"),
    "vpc-dynamic": ("vpc", "subformat=dynamic"),
    "vpc-dynamic-512K": ("vpc", "subformat=dynamic,block_size=512K"),
    "vhdx-dynamic": ("vhdx", "subformat=dynamic"),
    "vhdx-fixed": ("vhdx", "subformat=fixed"),
    "vhdx-dynamic-1M": ("vhdx", "subformat=dynamic,block_size=1M"),
}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("source", list(KINDS))
def test_convert_matrix(images: dict[str, Path], tmp_path: Path, qemu_img: str, source: str,
                        target: str) -> None:
    src = images[source]
    out_fmt, options = TARGETS[target]
    dst = tmp_path / f"out.{target}"
    args = ["convert", "-f", fmt_of(source), "-O", out_fmt]
    if options:
        args += ["-o", options]
    code, out, errs = ds_run(*args, src, dst)
    assert (code, out, errs) == (0, "", "")
    # a VHD target may be larger: its size is rounded up to a CHS geometry, as by qemu-img
    size = ds_json("info", "--output=json", "-f", fmt_of(source), src)["virtual-size"]
    assert guest_sha(qemu_img, dst, out_fmt, size) == guest_sha(qemu_img, src, fmt_of(source))
    assert leftovers(tmp_path) == [dst.name]
    # and back through qemu's compare (sizes may differ by the VHD geometry rounding)
    assert qemu(qemu_img, "compare", "-f", fmt_of(source), "-F", out_fmt, src, dst).returncode == 0
    if out_fmt == "vhdx":  # qemu-img accepts what we made
        assert qemu(qemu_img, "check", "-f", "vhdx", dst).returncode == 0
    if target == "vhdx-fixed":
        return  # fully allocated by definition
    written = sum(n for p, _, n in WRITES if p != "0x00")
    # sparse: the written data (without the written zeros), block rounding and metadata
    slack = {"vhdx-dynamic": 16 * MiB, "vhdx-dynamic-1M": 4 * MiB,
             "vpc-dynamic": 4 * MiB}.get(target, 1 * MiB)
    assert dst.stat().st_blocks * 512 < written + slack


def test_convert_keeps_targets_sparse(images: dict[str, Path], tmp_path: Path) -> None:
    from diskspec.runtime.engines.vhd.engine import VhdEngine

    src = images["raw"]  # its 2 MiB of written zeros at 4 MiB are allocated in the file
    source_allocated = src.stat().st_blocks * 512
    slack = 64 * KiB  # file-system block rounding
    for sparse, low, high in (("4k", 0, source_allocated - 2 * MiB + slack),
                              ("0", source_allocated - slack, source_allocated + slack)):
        dst = tmp_path / f"sparse-{sparse}.raw"
        assert ds_run("convert", "-S", sparse, "-f", "raw", src, dst)[0] == 0
        allocated = dst.stat().st_blocks * 512
        assert low <= allocated <= high, (sparse, allocated, source_allocated)
        assert dst.read_bytes() == src.read_bytes()
    dyn = tmp_path / "sparse.vhd"
    assert ds_run("convert", "-O", "vpc", "-o", "block_size=512K", src, dyn)[0] == 0
    with ds.open(dyn) as image:  # the all-zero blocks at 4 MiB were never allocated
        engine = image.engine
        assert isinstance(engine, VhdEngine)
        bat = engine.bat
        assert [bat[i] == 0xFFFFFFFF for i in range(7, 13)] == [True, True, True, True, False, False]


def test_convert_raw_to_raw_uses_copy_file_range(images: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.copy_file_range

    def counting(src: int, dst: int, count: int, offset_src: int | None = None,
                 offset_dst: int | None = None) -> int:
        calls.append(count)
        return real(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", counting)
    dst = tmp_path / "copy.raw"
    assert ds_run("convert", "-S", "0", "-f", "raw", "-O", "raw", images["raw"], dst)[0] == 0
    assert calls and dst.read_bytes() == images["raw"].read_bytes()


def test_convert_concatenates_sources_and_writes_into_existing(images: dict[str, Path],
                                                               tmp_path: Path, qemu_img: str) -> None:
    both = tmp_path / "both.raw"
    assert ds_run("convert", images["raw"], images["vpc-dynamic"], both)[0] == 0
    a, b = images["raw"].read_bytes(), ds.open(images["vpc-dynamic"]).read()
    assert both.read_bytes() == a + b
    # -n: an existing, larger, non-zero target is overwritten, zeros included
    existing = tmp_path / "existing.raw"
    existing.write_bytes(b"\xff" * (len(a) + MiB))
    assert ds_run("convert", "-n", "-f", "raw", "-O", "raw", images["raw"], existing)[0] == 0
    assert existing.read_bytes() == a + b"\xff" * MiB
    code, _, errs = ds_run("convert", "-n", "-o", "subformat=fixed", images["raw"], existing)
    assert code == 1 and "-o has no effect" in one_error_line(errs)
    small = tmp_path / "small.raw"
    small.write_bytes(bytes(4096))
    code, _, errs = ds_run("convert", "-n", images["raw"], small)
    assert code == 1 and "smaller" in one_error_line(errs)


def test_convert_failure_leaves_no_target(images: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diskspec.runtime.engines.vhd.engine import VhdEngine

    src = images["raw"]
    dst = tmp_path / "fail.vhd"
    writes = 0
    real_write = VhdEngine.write

    def failing(self: VhdEngine, offset: int, data: memoryview) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise OSError(28, "No space left on device")
        real_write(self, offset, data)

    monkeypatch.setattr(VhdEngine, "write", failing)
    code, out, errs = ds_run("convert", "-O", "vpc", src, dst)
    assert code == 1 and "No space left on device" in one_error_line(errs)
    assert leftovers(tmp_path) == []
    # Ctrl-C: same, exit 130; an existing destination is written in place, as qemu-img
    # writes it (issue 16 item 2), so it is the same file afterwards and nothing is left over
    dst.write_bytes(b"old content")
    inode = dst.stat().st_ino
    writes = -10**9

    def interrupted(self: VhdEngine, offset: int, data: memoryview) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(VhdEngine, "write", interrupted)
    code, out, errs = ds_run("convert", "-O", "vpc", src, dst)
    assert code == 130 and "interrupted" in one_error_line(errs)
    assert leftovers(tmp_path) == ["fail.vhd"] and dst.stat().st_ino == inode


def test_convert_into_missing_directory(images: dict[str, Path], tmp_path: Path) -> None:
    code, _, errs = ds_run("convert", images["raw"], tmp_path / "no" / "such" / "out.raw")
    assert code == 1 and "No such file or directory" in one_error_line(errs)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    code, _, errs = ds_run("convert", images["raw"], blocker / "out.raw")
    assert code == 1 and one_error_line(errs)
    assert leftovers(tmp_path) == ["file"]


def test_convert_progress_bar_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(True, stream)
    for done in (0, 50, 100):
        bar(done, 100)
    bar.close()
    assert "(100.00/100%)" in stream.getvalue() and stream.getvalue().endswith("\n")
    plain = io.StringIO()  # not a terminal: qemu-img's own lines (see test_cli_parity)
    ProgressBar(True, plain)(50, 100)
    assert plain.getvalue() == "    (50.00/100%)\r"
    off = io.StringIO()
    ProgressBar(False, off)(50, 100)
    assert off.getvalue() == ""


# -- compare ---------------------------------------------------------------------------------


def test_compare_matches_qemu(images: dict[str, Path], tmp_path: Path, qemu_img: str) -> None:
    raw, dyn, fixed = images["raw"], images["vpc-dynamic"], images["vpc-fixed"]
    changed = tmp_path / "changed.raw"
    changed.write_bytes(raw.read_bytes())
    with open(changed, "r+b") as f:
        f.seek(5 * MiB + 1000)
        f.write(b"\x01")
    longer = tmp_path / "longer.raw"
    longer.write_bytes(raw.read_bytes() + bytes(MiB))
    longer_dirty = tmp_path / "longer-dirty.raw"
    longer_dirty.write_bytes(raw.read_bytes() + bytes(1000) + b"\x07" + bytes(MiB))
    cases = [("raw", raw, "vpc", dyn, []), ("vpc", fixed, "vpc", dyn, []),
             ("raw", raw, "raw", changed, []), ("vpc", dyn, "raw", changed, []),
             ("raw", raw, "raw", longer, []), ("raw", raw, "raw", longer, ["-s"]),
             ("raw", raw, "raw", longer_dirty, [])]
    for fa, a, fb, b, extra in cases:
        theirs = qemu(qemu_img, "compare", *extra, "-f", fa, "-F", fb, a, b)
        code, out, errs = ds_run("compare", *extra, "-f", fa, "-F", fb, a, b)
        assert (code, out) == (theirs.returncode, theirs.stdout), (a.name, b.name, extra, errs)
    assert "Content mismatch at offset 5243392!" in ds_run("compare", raw, changed)[1]
    assert ds_run("compare", "-q", raw, changed) == (1, "", "")


def test_compare_errors_exit_2(images: dict[str, Path], tmp_path: Path, qemu_img: str) -> None:
    missing = tmp_path / "missing.raw"
    assert qemu(qemu_img, "compare", images["raw"], missing).returncode == 2
    code, _, errs = ds_run("compare", images["raw"], missing)
    assert code == 2 and f"Could not open '{missing}'" in one_error_line(errs)
    # bad arguments: 1, as qemu-img ("Expecting two image file names")
    assert qemu(qemu_img, "compare", images["raw"]).returncode == 1
    code, _, errs = ds_run("compare", images["raw"])
    assert code == 1 and one_error_line(errs)


# -- create, commit, rebase, resize, measure -------------------------------------------------


@pytest.mark.parametrize("options,size", [("", "64M"), ("subformat=fixed", "10M"),
                                          ("force_size=on", "10000000"),
                                          ("subformat=fixed,force_size=on", "10M")])
def test_create_matches_qemu(tmp_path: Path, qemu_img: str, options: str, size: str) -> None:
    ours, theirs = tmp_path / "ours.vhd", tmp_path / "theirs.vhd"
    extra = ["-o", options] if options else []
    code, out, errs = ds_run("create", "-f", "vpc", *extra, ours, size)
    expected = run(qemu_img, "create", "-f", "vpc", *extra, str(theirs), size)
    assert code == 0, errs
    assert out == expected.replace(str(theirs), str(ours))  # "Formatting '...', fmt=vpc size=..."
    info = qemu_json(qemu_img, "info", "--output=json", "-f", "vpc", ours)
    assert info["virtual-size"] == qemu_json(qemu_img, "info", "--output=json", "-f", "vpc",
                                             theirs)["virtual-size"]
    assert ours.stat().st_size == theirs.stat().st_size


def test_create_options_and_errors(tmp_path: Path) -> None:
    code, out, _ = ds_run("create", "-f", "vpc", "-o", "help")
    assert code == 0 and "subformat" in out and "force_size" in out
    raw = tmp_path / "r.raw"
    assert ds_run("create", "-q", "-o", "size=1M", raw) == (0, "", "")
    assert raw.stat().st_size == MiB
    for args, message in [((tmp_path / "x.raw",), "needs a size"),
                          (("-f", "nope", tmp_path / "y", "1M"), "unknown format"),
                          (("-f", "vpc", "-o", "subformat=weird", tmp_path / "z.vhd", "1M"),
                           "subformat"),
                          (("-f", "vpc", tmp_path / "w.vhd", "12Q"), "invalid size"),
                          (("-F", "vpc", tmp_path / "v.vhd", "1M"), "backing")]:
        code, _, errs = ds_run("create", *args)
        assert code == 1 and message in one_error_line(errs), (args, errs)


def test_commit(tmp_path: Path) -> None:
    parent, child = tmp_path / "p.vhd", tmp_path / "c.vhd"
    ds_run("create", "-q", "-f", "vpc", parent, "8M")
    ds_run("create", "-q", "-f", "vpc", "-b", parent, "-F", "vpc", child)
    with ds.open(child, "r+") as image:
        image.seek(MiB + 7)
        image.write(b"committed")
        content = image.pread(0, image.size)
    code, out, _ = ds_run("commit", child)
    assert (code, out) == (0, "Image committed.\n")
    with ds.open(parent) as image:
        assert image.read() == content
    code, _, errs = ds_run("commit", parent)
    assert code == 1 and "no backing file" in one_error_line(errs)
    code, _, errs = ds_run("commit", "-b", tmp_path / "other.vhd", child)
    assert code == 1 and "not in the backing chain" in one_error_line(errs)


def test_rebase_vpc_removing_the_parent_is_refused_before_any_write(tmp_path: Path) -> None:
    parent, child = tmp_path / "p.vhd", tmp_path / "c.vhd"
    ds_run("create", "-q", "-f", "vpc", parent, "8M")
    ds_run("create", "-q", "-f", "vpc", "-b", parent, "-F", "vpc", child)
    before = child.read_bytes()
    code, _, errs = ds_run("rebase", "-b", "", child)
    assert code == 1 and "not supported: removing the parent of a differencing VHD" in \
        one_error_line(errs)
    assert child.read_bytes() == before


def test_rebase_vpc_onto_a_new_parent(tmp_path: Path) -> None:
    """A real rebase: the child's identity and locators now name the new parent, which it
    opens by itself, with its content unchanged."""
    old, new, child = tmp_path / "old.vhd", tmp_path / "new.vhd", tmp_path / "child.vhd"
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", old, "8M")
    with ds.open(old, "r+") as image:
        image.write(b"\x01" * 3 * MiB)
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", new, "8M")
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", "-b", old, "-F", "vpc", child)
    with ds.open(child, "r+") as image:
        image.seek(5 * MiB)
        image.write(b"\x02" * 4096)
        content = image.pread(0, image.size)
    code, _, errs = ds_run("rebase", "-b", "new.vhd", "-F", "vpc", child)
    assert code == 0, errs
    old.unlink()
    with ds.open(child) as image:
        assert image.backing is not None and image.backing.path.name == "new.vhd"
        assert image.pread(0, image.size) == content


def test_rebase_safe_mode_copies_what_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """The generic safe mode, with an engine hook that records the new reference."""
    from diskspec.runtime.engines.vhd.engine import VhdEngine

    old, new, child = tmp_path / "old.vhd", tmp_path / "new.vhd", tmp_path / "child.vhd"
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", old, "8M")
    with ds.open(old, "r+") as image:
        image.write(b"\x01" * 3 * MiB)  # the new parent differs in the first 3 MiB
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", new, "8M")
    with ds.open(new, "r+") as image:
        image.seek(7 * MiB)
        image.write(b"\x03" * 4096)  # and in block 7, where the child has its own data
    ds_run("create", "-q", "-f", "vpc", "-o", "block_size=1M", "-b", old, "-F", "vpc", child)
    with ds.open(child, "r+") as image:
        image.seek(7 * MiB)
        image.write(b"\x02" * MiB)
        content = image.pread(0, image.size)
    calls: list[tuple[Any, Any, bool]] = []

    def set_backing(self: VhdEngine, parent: ds.Image, path: Path, check_only: bool = False) -> None:
        calls.append((parent.path, path, check_only))

    monkeypatch.setattr(VhdEngine, "set_backing", set_backing, raising=False)
    code, _, errs = ds_run("rebase", "-b", "new.vhd", "-F", "vpc", child)
    assert code == 0, errs
    assert calls == [(new, new, True), (new, new, False)]  # asked first, before any write
    with ds.open(child, parent=new) as image:  # over the new parent: the same content
        assert image.pread(0, image.size) == content
    with ds.open(child, backing=False) as image:
        own = [e for e in image.extents() if e.state is ds.State.DATA]
        assert sum(e.length for e in own) == 3 * MiB + MiB  # only what differed, plus its own


def test_resize(tmp_path: Path, qemu_img: str) -> None:
    raw = tmp_path / "r.raw"
    ds_run("create", "-q", raw, "1M")
    assert ds_run("resize", raw, "+1M") == (0, "Image resized.\n", "")
    assert raw.stat().st_size == 2 * MiB
    code, _, errs = ds_run("resize", raw, "-1M")
    assert code == 1 and "--shrink" in errs.splitlines()[0]
    assert ds_run("resize", "--shrink", raw, "-1M")[0] == 0 and raw.stat().st_size == MiB
    vhd = tmp_path / "d.vhd"
    ds_run("create", "-q", "-f", "vpc", vhd, "8M")
    assert ds_run("resize", "-f", "vpc", vhd, "16M")[0] == 0
    assert qemu_json(qemu_img, "info", "--output=json", "-f", "vpc", vhd)["virtual-size"] >= 16 * MiB
    code, _, errs = ds_run("resize", raw, "lots")
    assert code == 1 and "invalid size" in one_error_line(errs)


def test_measure(images: dict[str, Path], tmp_path: Path, qemu_img: str) -> None:
    for args in (["--size", "1G"], ["-f", "vpc", str(images["vpc-dynamic"])]):
        theirs = qemu_json(qemu_img, "measure", "--output=json", "-O", "raw", *args)
        assert ds_json("measure", "--output=json", "-O", "raw", *args) == theirs
    assert qemu(qemu_img, "measure", "-O", "vpc", "--size", "1G").returncode == 1  # qemu cannot
    # ours: the numbers are the files our create and convert make
    empty = tmp_path / "empty.vhd"
    ds_run("create", "-q", "-f", "vpc", empty, "64M")
    got = ds_json("measure", "--output=json", "-O", "vpc", "--size", "64M")
    assert got["required"] == empty.stat().st_size
    src = images["raw"]
    for options in ("subformat=dynamic", "subformat=fixed"):
        dst = tmp_path / f"m-{options[10:]}.vhd"
        ds_run("convert", "-O", "vpc", "-o", options, src, dst)
        got = ds_json("measure", "--output=json", "-O", "vpc", "-o", options, src)
        assert got["required"] == dst.stat().st_size, options
        assert got["fully-allocated"] >= got["required"]
    code, out, _ = ds_run("measure", "-O", "raw", "--size", "1M")
    assert out == "required size: 1048576\nfully allocated size: 1048576\n"
    code, _, errs = ds_run("measure", "--size", "1M", src)
    assert code == 1 and one_error_line(errs)


# -- errors, help, entry points --------------------------------------------------------------


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.vhd"
    garbage.write_bytes(os.urandom(4096))
    cases: list[tuple[list[str | Path], int]] = [(["info", "--bogus", garbage], 1), (["frobnicate"], 1),
             (["info", tmp_path / "missing"], 1), (["info", "-f", "vpc", garbage], 1),
             (["map", "-f", "vpc", garbage], 1), (["check", "-f", "vpc", garbage], 1),
             (["check", "-r", "some", garbage], 1), (["convert", garbage], 1),
             (["convert", "-c", garbage, tmp_path / "x"], 1), (["info", tmp_path], 1),
             (["map", "--output=xml", garbage], 1)]
    for args, expected in cases:
        code, out, errs = ds_run(*args)
        assert code == expected, (args, errs)
        one_error_line(errs)
    assert "not supported: compression" in ds_run("convert", "-c", garbage, tmp_path / "x")[2]


def test_entry_point_and_help(images: dict[str, Path]) -> None:
    proc = ds_proc("--help")
    assert proc.returncode == 0
    for text in ("info", "convert", "Exit codes", "63", "compare: 0 identical"):
        assert text in proc.stdout
    proc = ds_proc("map", "--output=json", "-f", "vpc", images["vpc-dynamic"])
    assert proc.returncode == 0 and json.loads(proc.stdout)
    proc = ds_proc("info", "-f", "vpc", images["raw"])  # not a VHD: one line, exit 1
    assert proc.returncode == 1 and one_error_line(proc.stderr)
    code, out, _ = ds_run("convert", "--help")
    assert code == 0 and "--sparse-size" in out


#: exit codes a command may give on a damaged image, and the one that means "error"
DAMAGE_CODES = {"info": ({0, 1}, 1), "map": ({0, 1}, 1), "measure": ({0, 1}, 1),
                "convert": ({0, 1}, 1), "compare": ({0, 1, 2, 4}, 2), "check": ({0, 1, 2, 3, 63}, None),
                "resize": ({0, 1}, 1)}
DAMAGE_COMMANDS = [["info", "--output=json"], ["info", "--backing-chain"], ["map", "--output=json"],
                   ["map"], ["measure", "-O", "vhdx", "--output=json"], ["convert", "-O", "raw"],
                   ["convert", "-O", "vpc"], ["compare"], ["check", "--output=json"], ["check"],
                   ["check", "-r", "all"], ["resize", "+1M"]]
WRITERS = {"check -r", "resize"}


def damage(pristine: bytes, fmt: str, rng: random.Random) -> bytes:
    """Random bytes poked where the metadata lies (checksums fixed up half the time, so that
    the damage gets past them), or the file cut short."""
    data = bytearray(pristine)
    if rng.random() < 0.15:
        return bytes(data[: rng.randrange(len(data))])
    hot = [0, 512, 1536, len(data) - 512] if fmt == "vpc" else \
        [0, 64 * KiB, 128 * KiB, 192 * KiB, 256 * KiB, MiB, 2 * MiB, 3 * MiB]
    for _ in range(rng.randint(1, 8)):
        at = min(rng.choice(hot) + rng.randrange(4096), len(data) - 8)
        data[at : at + rng.choice((1, 4, 8))] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) \
            * 8 if rng.random() < 0.5 else rng.randbytes(8)
        del data[len(pristine):]
    if rng.random() < 0.5:
        if fmt == "vpc":
            for at in (0, len(data) - 512):
                with contextlib.suppress(DiskspecError):  # not a footer any more
                    data[at + 64 : at + 68] = vhd.Footer.checksum_of(data, at).to_bytes(4, "big")
        else:
            for at, codec, size in ((64 * KiB, vhdx.Header, 4 * KiB), (128 * KiB, vhdx.Header, 4 * KiB),
                                    (192 * KiB, vhdx.RegionTable, 64 * KiB),
                                    (256 * KiB, vhdx.RegionTable, 64 * KiB)):
                with contextlib.suppress(DiskspecError):
                    checksum = codec.checksum_of(bytes(data[at : at + size]))
                    data[at + 4 : at + 8] = checksum.to_bytes(4, "little")
    return bytes(data)


def test_damaged_images_through_every_command(images: dict[str, Path], tmp_path: Path) -> None:
    """Damaged and truncated images through every command: a documented exit code, an error as
    one line on stderr (never a traceback), and commands that only read leave the file as it was."""
    rng = random.Random(5)
    seen: set[tuple[str, int]] = set()
    for kind in ("vpc-fixed", "vpc-dynamic", "vhdx-dynamic"):
        fmt, pristine = fmt_of(kind), images[kind].read_bytes()
        for _ in range(30):
            path = tmp_path / "damaged.img"
            data = damage(pristine, fmt, rng)
            path.write_bytes(data)
            command = rng.choice(DAMAGE_COMMANDS)
            args: list[str | Path] = [*command, *(["-f", fmt] if rng.random() < 0.5 else []), path]
            if command[0] == "convert":
                args.append(tmp_path / "out.img")
            elif command[0] == "compare":
                args.append(images[kind])
            code, _, errs = ds_run(*args)
            allowed, error = DAMAGE_CODES[command[0]]
            assert code in allowed and "Traceback" not in errs, (args, code, errs)
            if code == error:
                one_error_line(errs)
            if " ".join(command[:2]) not in WRITERS and command[0] not in WRITERS:
                assert path.read_bytes() == data, args
            (tmp_path / "out.img").unlink(missing_ok=True)
            assert leftovers(tmp_path) == [path.name], args  # convert leaves nothing behind
            seen.add((command[0], code))
    # the damage is varied enough that commands both succeed and fail on it
    assert {c for c, code in seen if code == 0} >= {"info", "map", "convert"}
    assert {c for c, code in seen if code == DAMAGE_CODES[c][1]} >= {"info", "map", "convert"}


def test_version_is_the_installed_distributions() -> None:
    """--version prints the package's __version__, which the installed metadata (built from
    pyproject.toml) must agree with: the version is written in one place."""
    from importlib.metadata import version

    assert ds.__version__ == version("diskspec")
    for flag in ("--version", "-V"):
        assert ds_run(flag) == (0, f"diskspec version {ds.__version__}\n", "")


def test_dissect_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("diskspec.runtime.cli.dissect")
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    module.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "diskspec.runtime.cli.dissect", module)
    assert ds_run("dissect", "x.vhd", "--bat")[0] == 7
    assert seen == [["x.vhd", "--bat"]]


def test_units() -> None:
    assert parse_size("1.5G") == 3 * 512 * MiB and parse_size("64k") == 64 * KiB
    assert parse_size("512") == 512 and parse_size("1T") == 1 << 40
    assert [size_to_str(n) for n in (0, 28672, 200704, 4603248, 1 << 30, 1000 * KiB)] == \
        ["0 B", "28 KiB", "196 KiB", "4.39 MiB", "1 GiB", "0.977 MiB"]


def test_unsupported_feature_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(MiB))

    def no_resize(self: Engine, size: int) -> None:
        raise UnsupportedFeatureError("resizing raw images")

    from diskspec.runtime.engines.raw.engine import RawEngine

    monkeypatch.setattr(RawEngine, "resize", no_resize)
    code, _, errs = ds_run("resize", raw, "2M")
    assert code == 1 and "not supported: resizing raw images" in one_error_line(errs)


@pytest.fixture
def chdir(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    old = Path.cwd()
    yield lambda p: os.chdir(p)
    os.chdir(old)


def test_relative_names(tmp_path: Path, chdir: Callable[[Path], None]) -> None:
    """Backing names given relative to the new image's directory, like qemu-img."""
    sub = tmp_path / "sub"
    sub.mkdir()
    chdir(tmp_path)
    assert ds_run("create", "-q", "-f", "vpc", "sub/base.vhd", "4M")[0] == 0
    assert ds_run("create", "-q", "-f", "vpc", "-b", "base.vhd", "-F", "vpc", "sub/top.vhd")[0] == 0
    info = ds_json("info", "--output=json", "sub/top.vhd")
    assert info["backing-filename"] == "base.vhd"
    assert info["full-backing-filename"] == "sub/base.vhd"


def test_entry_point_exits_with_the_code_and_runs_exit_handlers(images: dict[str, Path]) -> None:
    """run() freezes the garbage collector before exiting (a faster exit); exit handlers
    registered before it still run, standard output is complete, the code is main()'s."""
    code = ("import atexit, sys; atexit.register(print, 'handler ran'); "
            f"sys.argv = ['diskspec', 'map', '--output=json', '-f', 'vpc', {str(images['vpc-dynamic'])!r}]; "
            "from diskspec.runtime.cli.main import run; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    body, _, tail = proc.stdout.rpartition("]\n")
    assert proc.returncode == 0 and json.loads(body + "]") and tail == "handler ran\n"
    proc = subprocess.run([sys.executable, "-c", code.replace("'vpc', ", "'vpc', '--nope', ")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and proc.stdout == "handler ran\n" and one_error_line(proc.stderr)


#: a child that sends itself SIGINT when MODULE is first imported, then runs the command's
#: entry point on ARGV: Ctrl-C at a chosen moment, without a race
CTRL_C_AT_IMPORT = """
import os, signal, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
sys.argv = ['diskspec', *{argv!r}]
from diskspec.runtime.cli.entry import run
run()
"""


def test_ctrl_c_while_starting_is_quiet_and_later_undoes_the_work(images: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """Ctrl-C while the command's modules load ends the process as it would a C program
    (killed by SIGINT, no traceback); once the command runs, it is an interruption that
    removes what it started and exits with 130."""
    def child(module: str, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        code = CTRL_C_AT_IMPORT.format(module=module, argv=[str(a) for a in argv])
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, timeout=60)

    target = tmp_path / "out.vhd"
    early = child("diskspec.runtime.cli.options", "convert", "-O", "vpc", images["raw"], target)
    assert early.returncode == -signal.SIGINT and early.stderr == ""
    late = child("diskspec.runtime.ops.copier", "convert", "-O", "vpc", images["raw"], target)
    assert late.returncode == 130 and "interrupted" in one_error_line(late.stderr)
    assert leftovers(tmp_path) == []
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "--version"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout == f"diskspec version {ds.__version__}\n"


def test_a_reader_that_goes_away_is_not_a_failure(tmp_path: Path, qemu_img: str) -> None:
    """`diskspec map disk.vhd | head -c 10`: the output that no one reads any more is dropped
    and the command ends with its own exit code and nothing on stderr, as qemu-img does."""
    path = tmp_path / "striped.vhd"
    with ds.create(path, "vpc", 4 << 30, subformat="dynamic") as image:
        for block in range(0, 2048, 2):  # 1024 data extents
            image.seek(block * 2 * MiB)
            image.write(b"x" * 512)
    assert len(ds_run("map", "--output=json", path)[1]) > 2 * 64 * 1024  # more than a pipe holds
    for command in ([sys.executable, "-m", "diskspec.runtime"], [qemu_img]):
        proc = subprocess.Popen([*command, "map", "--output=json", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(10) == b'[{ "start"'
        proc.stdout.close()  # the reader goes away
        errors = proc.stderr.read()
        assert proc.wait(timeout=60) == 0 and errors == b"", (command, errors)


def test_ctrl_c_in_the_middle_of_a_copy(tmp_path: Path) -> None:
    """A real SIGINT while the reader thread is busy: the partial target is removed and the
    exit code is 130."""
    source = tmp_path / "src.vhd"
    with ds.create(source, "vpc", 64 * MiB, subformat="dynamic") as image:
        image.write(os.urandom(40 * MiB))  # ten read batches of 4 MiB
    target = tmp_path / "out" / "copy.raw"
    target.parent.mkdir()
    code = f"""
import os, signal, sys
from diskspec.runtime.engines.raw.engine import RawEngine
real, calls = RawEngine.write, []
def write(self, offset, data):
    calls.append(offset)
    if len(calls) == 3:  # the reader is ahead by then
        os.kill(os.getpid(), signal.SIGINT)
    return real(self, offset, data)
RawEngine.write = write
sys.argv = ['diskspec', 'convert', '-O', 'raw', {str(source)!r}, {str(target)!r}]
from diskspec.runtime.cli.entry import run
run()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 130 and "interrupted" in one_error_line(proc.stderr)
    assert leftovers(target.parent) == []


def test_start_up_imports_stay_lean() -> None:
    """What the command line and convert's engines import at start-up leaves out modules it
    does not need for most commands (logging, concurrent.futures, json, shutil: ~7 ms per
    start together); a short convert feels every millisecond of start-up."""
    code = ("import sys; before = set(sys.modules); "
            "import diskspec.runtime.cli.main, diskspec.runtime.cli.copy as c, diskspec.runtime.ops.convert, "
            "diskspec.runtime.engines.vhd.engine, diskspec.runtime.engines.vhdx.engine; "
            "c.Parser('convert', '').add_argument('-f'); "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert "diskspec.runtime.ops.copier" in loaded  # the probe imports what it claims to
    assert not loaded & {"logging", "concurrent.futures", "json", "shutil"}
