"""The messages qemu-img defines and scripts match (issue 16, item 11), listed: each command
runs through qemu-img 7.2 and diskspec on the same files; both print the text on the same
stream and exit with the same code. Also size-0 images (item 12), made as qemu makes them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_cli_parity import ds, held_read_write, qemu

#: (command line, stream: 1 stdout / 2 stderr, the text, exit code); {d} is the directory
MESSAGES = [
    (("info", "{d}/missing.img"), 2,
     "Could not open '{d}/missing.img': Could not open '{d}/missing.img': No such file or directory", 1),
    (("compare", "{d}/missing.img", "{d}/a.raw"), 2, "Could not open '{d}/missing.img': ", 2),
    (("convert", "{d}/missing.img", "{d}/out.raw"), 2, "Could not open '{d}/missing.img': ", 1),
    (("map", "{d}/missing.img"), 2, "Could not open '{d}/missing.img': ", 1),
    (("check", "{d}/missing.img"), 2, "Could not open '{d}/missing.img': ", 1),
    (("info", "-f", "vpc", "{d}/garbage.vhd"), 2, "Could not open '{d}/garbage.vhd': ", 1),
    (("create", "-f", "vpc", "{d}/big.vhd", "3T"), 2,
     "The image size is too large for file format 'vpc'", 1),
    (("create", "-f", "vhdx", "{d}/big.vhdx", "65T"), 2, "Image size too large; max of 64TB", 1),
    (("create", "-f", "raw", "{d}/huge.raw", "9E"), 2,
     "Invalid image size specified. Must be between 0 and 9223372036854775807.", 1),
    (("create", "-f", "raw", "{d}/nosize.raw"), 2, "Image creation needs a size parameter", 1),
    (("resize", "-f", "raw", "{d}/a.raw", "-2M"), 2, "New image size must be positive", 1),
    (("resize", "-f", "raw", "{d}/a.raw", "-512K"), 2,
     "Use the --shrink option to perform a shrink operation.", 1),
    (("resize", "-f", "raw", "{d}/b.raw", "+1M"), 1, "Image resized.", 0),
    (("convert", "-n", "-f", "raw", "-O", "raw", "{d}/big.raw", "{d}/a.raw"), 2,
     "output file is smaller than input file", 1),
    (("compare", "{d}/a.raw", "{d}/a.raw"), 1, "Images are identical.", 0),
    (("compare", "{d}/a.raw", "{d}/c.raw"), 1, "Content mismatch at offset 8192!", 1),
    (("compare", "{d}/a.raw", "{d}/big.raw"), 1, "Warning: Image size mismatch!", 0),
    (("compare", "-s", "{d}/a.raw", "{d}/big.raw"), 1, "Strict mode: Image size mismatch!", 1),
    (("bogus",), 2, "Command not found: bogus", 1),
]


def files(d: Path, qemu_img: str, qemu_io: str) -> None:
    d.mkdir()
    for name, size in (("a.raw", "1M"), ("b.raw", "1M"), ("c.raw", "1M"), ("big.raw", "2M")):
        qemu(qemu_img, "create", "-q", "-f", "raw", d / name, size)
    qemu(qemu_io, "-f", "raw", "-c", "write -P 7 8192 512", d / "c.raw")
    (d / "garbage.vhd").write_bytes(b"garbage\n")


@pytest.mark.parametrize(("args", "stream", "text", "code"), MESSAGES,
                         ids=[" ".join(m[0])[:40] for m in MESSAGES])
def test_message_is_qemus(tmp_path: Path, qemu_img: str, qemu_io: str, args: tuple[str, ...],
                          stream: int, text: str, code: int) -> None:
    assert stream in (1, 2)
    for tool in ("qemu", "ds"):
        d = tmp_path / tool
        files(d, qemu_img, qemu_io)
        argv = [a.format(d=d) for a in args]
        result = qemu(qemu_img, *argv) if tool == "qemu" else ds(*argv)
        assert result[0] == code, (tool, result)
        output = result[1] if stream == 1 else result[2]
        assert text.format(d=d) in output, (tool, result)


def test_lock_messages_are_qemus(tmp_path: Path, qemu_img: str) -> None:
    image = tmp_path / "busy.vhdx"  # a format qemu-img checks (raw: 63 before any open)
    qemu(qemu_img, "create", "-q", "-f", "vhdx", image, "1M")
    with held_read_write(image):
        for args, text in ((("check", image), 'Failed to get shared "write" lock'),
                           (("convert", image, tmp_path / "o.raw"), 'Failed to get shared "write" lock'),
                           (("resize", "-f", "vhdx", image, "2M"), 'Failed to get "write" lock'),
                           (("create", "-f", "raw", image, "2M"), 'Failed to get "write" lock')):
            q, d = qemu(qemu_img, *args), ds(*args)
            assert q[0] == d[0] == 1 and text in q[2] and text in d[2], (args, q, d)
        q, d = qemu(qemu_img, "check", image), ds("check", image)
        assert f"Could not open '{image}': " in q[2] and f"Could not open '{image}': " in d[2]


@pytest.mark.parametrize("fmt", ["vpc", "vhdx"])
def test_size_zero_images_as_qemu(tmp_path: Path, qemu_img: str,
                                  make_image: Callable[..., Path], fmt: str) -> None:
    ours, theirs = tmp_path / f"ours.{fmt}", tmp_path / f"theirs.{fmt}"
    q = qemu(qemu_img, "create", "-f", fmt, theirs, "0")
    d = ds("create", "-f", fmt, ours, "0")
    assert q[0] == d[0] == 0 and q[1].startswith(f"Formatting '{theirs}', fmt={fmt} size=0")
    assert d[1].startswith(f"Formatting '{ours}', fmt={fmt} size=0")
    for image in (ours, theirs):  # each reads the other's
        info = json.loads(qemu(qemu_img, "info", "--output=json", "-f", fmt, image)[1])
        assert info["virtual-size"] == 0
        mine = json.loads(ds("info", "--output=json", "-f", fmt, image)[1])
        assert mine["virtual-size"] == 0 and mine["format"] == fmt
        if fmt == "vhdx":
            assert qemu(qemu_img, "check", image)[0] == 0
        assert ds("check", image)[0] == 0
        assert qemu(qemu_img, "compare", "-f", fmt, "-F", fmt, ours, theirs)[0] == 0
    # a size off the sector is rounded up, as qemu-img rounds it (1000 bytes: 1 KiB)
    if fmt == "vhdx":
        for image, tool in ((tmp_path / "q1.vhdx", "qemu"), (tmp_path / "d1.vhdx", "ds")):
            args = ("create", "-q", "-f", "vhdx", image, "1000")
            assert (qemu(qemu_img, *args) if tool == "qemu" else ds(*args))[0] == 0
            info = json.loads(qemu(qemu_img, "info", "--output=json", image)[1])
            assert info["virtual-size"] == 1024, tool
    # and it grows like any other image
    assert ds("resize", ours, "4M")[0] == 0
    raw = make_image("raw", "4M")
    assert qemu(qemu_img, "compare", "-f", fmt, "-F", "raw", ours, raw)[0] == 0
