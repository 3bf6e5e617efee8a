"""qemu-img parity of the command line (issue 16): the same command run through qemu-img 7.2
and diskspec, side by side, where qemu-img defines the behaviour."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diskspec.runtime.cli import main as cli


def ds(*args: str | Path) -> tuple[int, str, str]:
    """diskspec in-process, standard output a StringIO (not a terminal)."""
    out, errs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), errs.getvalue()


def qemu(qemu_img: str, *args: str | Path) -> tuple[int, str, str]:
    proc = subprocess.run([qemu_img, *map(str, args)], capture_output=True, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()  # \r kept


# -- 1: options after positional arguments ---------------------------------------------------


@pytest.mark.parametrize("args", [
    ("create", "{d}/x.vhd", "-f", "vpc", "1M"),
    ("convert", "{d}/a.raw", "-O", "vpc", "{d}/out.vhd"),
    ("info", "{d}/a.raw", "--output", "json", "-f", "raw"),
    ("compare", "{d}/a.raw", "-f", "raw", "{d}/a.raw", "-F", "raw"),
])
def test_options_after_positional_arguments(tmp_path: Path, qemu_img: str,
                                            args: tuple[str, ...]) -> None:
    for tool in ("qemu", "ds"):
        d = tmp_path / tool
        d.mkdir()
        qemu(qemu_img, "create", "-q", "-f", "raw", d / "a.raw", "1M")
        argv = [a.format(d=d) for a in args]
        code = qemu(qemu_img, *argv)[0] if tool == "qemu" else ds(*argv)[0]
        assert code == 0, (tool, argv)


# -- 4: progress through a pipe --------------------------------------------------------------


def progress_lines(out: str) -> list[str]:
    assert out.endswith("\r\n")
    return out[:-1].split("\r")[:-1]


def test_progress_through_a_pipe_is_qemus(make_image: Callable[..., Path], tmp_path: Path,
                                          qemu_img: str) -> None:
    src = make_image("raw", "64M", writes=(("1", 0, 10 << 20), ("2", 40 << 20, 5 << 20)))
    q = qemu(qemu_img, "convert", "-p", "-O", "vpc", src, tmp_path / "q.vhd")
    d = subprocess.run([sys.executable, "-m", "diskspec.runtime", "convert", "-p", "-O", "vpc",
                        str(src), str(tmp_path / "d.vhd")], capture_output=True, check=False)
    assert q[0] == d.returncode == 0
    for lines in (progress_lines(q[1]), progress_lines(d.stdout.decode())):
        assert lines[0] == "    (0.00/100%)" and lines[-1] == "    (100.00/100%)"
        for line in lines:  # qemu's exact shape: 4 spaces, %.2f, "/100%)"
            assert line.startswith("    (") and line.endswith("/100%)")
            float(line[5:-6])
    assert ds("convert", "-q", "-p", src, tmp_path / "e.raw")[1] == ""


# -- 11: the messages scripts match ----------------------------------------------------------


@contextlib.contextmanager
def held_read_write(path: Path) -> Iterator[None]:
    """Another process holding `path` read-write under qemu's locks (as qemu-img does)."""
    code = ("import os, sys, time\nfrom diskspec.runtime.locking import lock\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\nlock(fd, sys.argv[1], True)\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_lock_failure_wording_is_qemus(tmp_path: Path, qemu_img: str) -> None:
    image = tmp_path / "a.raw"
    qemu(qemu_img, "create", "-q", "-f", "raw", image, "1M")
    with held_read_write(image):
        q = qemu(qemu_img, "convert", "-O", "raw", image, tmp_path / "q.raw")
        d = ds("convert", "-O", "raw", image, tmp_path / "d.raw")
    text = 'Failed to get shared "write" lock'
    assert q[0] == d[0] == 1
    assert text in q[2] and text in d[2]


def test_compare_messages_are_qemus(make_image: Callable[..., Path], qemu_img: str) -> None:
    a = make_image("raw", "1M", writes=(("1", 0, 4096),))
    b = make_image("raw", "1M", writes=(("1", 0, 4096), ("2", 8192, 512)))
    c = make_image("raw", "2M", writes=(("1", 0, 4096),))
    for args in ((a, a), (a, b), (a, c)):
        q, d = qemu(qemu_img, "compare", *args), ds("compare", *args)
        assert q[0] == d[0] and q[1] == d[1], (args, q, d)
    assert ds("compare", a, b)[1] == "Content mismatch at offset 8192!\n"


# -- 12: exit codes and option values --------------------------------------------------------


@pytest.mark.parametrize("args", [
    (),  # qemu: "Not enough arguments", 1 (we print the help too)
    ("bogus",),  # "Command not found: bogus", 1
    ("compare", "only-one"),  # "Expecting two image file names", 1
    ("compare", "--bogus", "a", "b"),  # unrecognized option, 1
])
def test_exit_codes_of_bad_command_lines(qemu_img: str, args: tuple[str, ...]) -> None:
    q, d = qemu(qemu_img, *args), ds(*args)
    assert q[0] == d[0] == 1
    if args == ("bogus",):
        assert "Command not found: bogus" in q[2] and "Command not found: bogus" in d[2]


@pytest.mark.parametrize(("value", "ok"), [("on", True), ("y", True), ("n", True),
                                           ("maybe", False), ("ON", False), ("1", False)])
def test_bad_boolean_option_refused_as_qemu(tmp_path: Path, qemu_img: str, value: str,
                                            ok: bool) -> None:
    q = qemu(qemu_img, "create", "-f", "vpc", "-o", f"force_size={value}", tmp_path / "q.vhd", "1M")
    d = ds("create", "-f", "vpc", "-o", f"force_size={value}", tmp_path / "d.vhd", "1M")
    assert (q[0] == 0) == (d[0] == 0) == ok
    if not ok:
        message = "Parameter 'force_size' expects 'on' or 'off'"
        assert message in q[2] and message in d[2]


@pytest.mark.parametrize(("value", "ok"), [("1500k", True), ("512k", True), ("0", False),
                                           ("1M", True)])
def test_vhdx_log_size_rounded_up_as_qemu(tmp_path: Path, qemu_img: str, value: str,
                                          ok: bool) -> None:
    q = qemu(qemu_img, "create", "-f", "vhdx", "-o", f"log_size={value}", tmp_path / "q.vhdx", "8M")
    d = ds("create", "-f", "vhdx", "-o", f"log_size={value}", tmp_path / "d.vhdx", "8M")
    assert (q[0] == 0) == (d[0] == 0) == ok
    if ok:  # qemu-img reads ours, and both logs are the size rounded up to 1 MiB
        assert qemu(qemu_img, "check", tmp_path / "d.vhdx")[0] == 0
        from diskspec.runtime import open as open_image

        with open_image(tmp_path / "d.vhdx") as image:
            assert image.engine.header.log_length % (1 << 20) == 0  # type: ignore[attr-defined]


def test_no_arguments_prints_the_help() -> None:
    code, out, errs = ds()
    assert code == 1 and "usage: diskspec COMMAND" in errs and "Not enough arguments" in errs



def test_compare_bad_cache_mode_exits_2(make_image: Callable[..., Path], qemu_img: str) -> None:
    a = make_image("raw", "1M")
    q, d = qemu(qemu_img, "compare", "-T", "bogus", a, a), ds("compare", "-T", "bogus", a, a)
    assert q[0] == d[0] == 2
    assert "Invalid source cache option: bogus" in q[2] and "Invalid source cache option: bogus" in d[2]
