"""qemu-img's option forms that scripts use: --object, --image-opts (raw offset=/size=,
unknown keys), json: filenames; and small CLI wording fixes. qemu-img 7.2 is the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.engines.vhdx.create import win32_absolute


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def ours(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "diskspec.runtime", *args, cwd=cwd)


def message(proc: subprocess.CompletedProcess[str]) -> str:
    """The text after the last 'PROG: ' of the one-line error (qemu adds "Could not open ...")."""
    line = proc.stderr.strip()
    assert line.count("\n") == 0, proc.stderr
    return line.rsplit(": ", 1)[-1] if "Could not open" not in line else line.split("': ", 1)[1]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "big.raw").write_bytes(bytes(range(256)) * 16 + b"\x5a" * 4096)  # 8 KiB
    with ds.create(tmp_path / "d.vhd", "vpc", 1 << 20) as disk:
        disk.write(b"vhd")
    return tmp_path


OBJECTS = [
    ("secret,id=s0,data=abc", 0, ""),
    ("secret,id=s0,data=YWJj,format=base64", 0, ""),
    ("secret,id=s0,file=pass.txt", 0, ""),
    ("secret,data=abc", 1, "Parameter 'id' is missing"),
    ("secret,id=s0", 1, "Either 'file' or 'data' must be provided"),
    ("secret,id=s0,data=a,file=pass.txt", 1, "'file' and 'data' are mutually exclusive"),
    ("secret,id=s0,data=a,bogus=1", 1, "Parameter 'bogus' is unexpected"),
]


@pytest.mark.parametrize(("obj", "code", "text"), OBJECTS, ids=[o for o, _, _ in OBJECTS])
def test_object_secret_as_qemu(work: Path, qemu_img: str, obj: str, code: int, text: str) -> None:
    (work / "pass.txt").write_text("abc")
    for verb in (["info"], ["check"], ["map"], ["compare", "d.vhd"]):
        theirs = run(qemu_img, verb[0], "--object", obj, *verb[1:], "d.vhd", cwd=work)
        mine = ours(verb[0], "--object", obj, *verb[1:], "d.vhd", cwd=work)
        if verb[0] == "check":  # qemu-img cannot check VHD (63); we can (0): a kept difference
            assert (mine.returncode == 0) == (theirs.returncode == 63), (mine.stderr, theirs.stderr)
        else:
            want = 2 if code and verb[0] == "compare" else code  # compare's error code is 2
            assert mine.returncode == theirs.returncode == want, (mine.stderr, theirs.stderr)
        if text:
            assert text in theirs.stderr and message(mine) == text
    # create takes it too (an unused secret is ignored)
    made = ours("create", "--object", obj, "-f", "raw", "new.raw", "1M", cwd=work)
    assert made.returncode == code and (work / "new.raw").exists() == (code == 0)
    (work / "new.raw").unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["iothread", "foo"])
def test_object_of_another_type_is_refused_naming_it(work: Path, kind: str) -> None:
    mine = ours("info", "--object", f"{kind},id=x", "d.vhd", cwd=work)
    assert mine.returncode == 1 and f"'{kind}'" in mine.stderr and mine.stderr.count("\n") == 1


def test_object_secret_is_kept_by_id() -> None:
    from diskspec.runtime.cli.objects import take_objects
    rest, objects = take_objects(["--object", "secret,id=a,data=x", "img",
                                  "--object=secret,id=b,data=eQ==,format=base64"])
    assert rest == ["img"] and objects.secret("a") == b"x" and objects.secret("b") == b"y"
    with pytest.raises(Exception, match="duplicate property 'a'"):
        take_objects(["--object", "secret,id=a,data=x", "--object", "secret,id=a,data=y"])


WINDOWS = [
    ("offset=512,size=1024", 0, ""),
    ("offset=512", 0, ""),
    ("size=4096", 0, ""),
    ("offset=1k,size=2k", 0, ""),  # qemu's size suffixes
    ("offset=7000,size=1536", 1, "The sum of offset (7000) and size (1536) has to be smaller or equal"),
    ("offset=9000", 1, "Offset (9000) cannot be greater than size of the containing file (8192)"),
    ("size=1000", 1, "Specified size is not multiple of 512"),
    ("bogus=1", 1, "Block format 'raw' does not support the option 'bogus'"),
    ("file.bogus=1", 1, "Block protocol 'file' doesn't support the option 'bogus'"),
]


@pytest.mark.parametrize(("opts", "code", "text"), WINDOWS, ids=[o for o, _, _ in WINDOWS])
def test_image_opts_raw_window_as_qemu(work: Path, qemu_img: str, opts: str, code: int, text: str) -> None:
    spec = f"driver=raw,file.filename=big.raw,{opts}"
    theirs = run(qemu_img, "info", "--output=json", "--image-opts", spec, cwd=work)
    mine = ours("info", "--output=json", "--image-opts", spec, cwd=work)
    assert mine.returncode == theirs.returncode == code, (mine.stderr, theirs.stderr)
    if code:
        assert text in theirs.stderr and text in mine.stderr and mine.stderr.count("\n") == 1
        return
    assert json.loads(mine.stdout)["virtual-size"] == json.loads(theirs.stdout)["virtual-size"]
    # the window's bytes: both tools convert it to a plain raw file
    run(qemu_img, "convert", "--image-opts", spec, "-O", "raw", "q.raw", cwd=work)
    got = ours("convert", "--image-opts", spec, "-O", "raw", "o.raw", cwd=work)
    assert got.returncode == 0, got.stderr
    assert (work / "o.raw").read_bytes() == (work / "q.raw").read_bytes()
    mapped = [ours("map", "--output=json", "--image-opts", spec, cwd=work),
              run(qemu_img, "map", "--output=json", "--image-opts", spec, cwd=work)]
    assert [json.loads(m.stdout)[0]["length"] for m in mapped] == \
        [json.loads(m.stdout)[0]["length"] for m in reversed(mapped)]


def test_raw_window_writes_stay_inside(work: Path) -> None:
    before = (work / "big.raw").read_bytes()
    with ds.open(work / "big.raw", "r+", format="raw", offset=1024, size=2048) as disk:
        assert disk.size == 2048
        disk.seek(2040)
        with pytest.raises(ds.errors.DiskspecError, match="past the end"):
            disk.write(b"x" * 16)
            disk.flush()
        disk.seek(0)
        disk.write(b"\xee" * 8)
    after = (work / "big.raw").read_bytes()
    assert after[:1024] == before[:1024] and after[1024:1032] == b"\xee" * 8
    assert after[1032:] == before[1032:] and len(after) == len(before)
    resized = ours("resize", "--image-opts", "driver=raw,file.filename=big.raw,offset=512", "+1M",
                   cwd=work)
    assert resized.returncode == 1 and "not supported" in resized.stderr


def test_json_filename_as_qemu(work: Path, qemu_img: str) -> None:
    name = 'json:{"driver":"raw","file":{"driver":"file","filename":"big.raw"},"offset":512}'
    theirs = run(qemu_img, "info", "--output=json", name, cwd=work)
    mine = ours("info", "--output=json", name, cwd=work)
    assert mine.returncode == theirs.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["virtual-size"] == json.loads(theirs.stdout)["virtual-size"] == 7680
    bad = name.replace('"offset"', '"bogus"')
    assert "does not support the option 'bogus'" in run(qemu_img, "info", bad, cwd=work).stderr
    assert "does not support the option 'bogus'" in ours("info", bad, cwd=work).stderr
    broken = ours("info", name[:-1], cwd=work)
    assert broken.returncode == 1 and "Could not parse the JSON options" in broken.stderr


def test_resize_shrink_refusal_is_one_line_starting_with_qemus_sentence(work: Path, qemu_img: str) -> None:
    theirs = run(qemu_img, "resize", "-f", "vpc", "d.vhd", "-512K", cwd=work)
    mine = ours("resize", "-f", "vpc", "d.vhd", "-512K", cwd=work)
    assert mine.returncode == theirs.returncode == 1
    sentence = "Use the --shrink option to perform a shrink operation."
    assert sentence in theirs.stderr.splitlines()[0]
    assert mine.stderr.count("\n") == 1 and mine.stderr.startswith(f"diskspec: {sentence}")


def test_dissect_color_has_help(tmp_path: Path) -> None:
    out = ours("dissect", "--help", cwd=tmp_path).stdout
    help_text = " ".join(out[out.rindex("--color {"):].split())
    assert help_text.split("--", 2)[1].startswith("color {auto,always,never} colour the human output")


def test_vhdx_locator_win32_form_only_for_windows_paths(tmp_path: Path) -> None:
    assert win32_absolute("/srv/vm/base.vhdx") == "/srv/vm/base.vhdx"
    assert win32_absolute("C:\\vm\\base.vhdx") == "\\\\?\\C:\\vm\\base.vhdx"
    assert win32_absolute("d:/vm/base.vhdx") == "\\\\?\\d:\\vm\\base.vhdx"
    assert win32_absolute("\\\\server\\share\\b.vhdx") == "\\\\?\\UNC\\server\\share\\b.vhdx"
    with ds.create(tmp_path / "base.vhdx", "vhdx", 1 << 20):
        pass
    with ds.create(tmp_path / "child.vhdx", "vhdx", None, subformat="differencing",
                   parent=tmp_path / "base.vhdx"):
        pass
    with ds.open(tmp_path / "child.vhdx") as child:
        locator: dict[str, str] = child.engine.locator  # type: ignore[attr-defined]
        assert locator["absolute_win32_path"] == str((tmp_path / "base.vhdx").resolve())
        assert len(child.chain()) == 2  # and the parent is found through the locator
