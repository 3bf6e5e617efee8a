"""The generator: located spec errors, determinism, --check, the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diskspec.codegen import SpecError, generate, load_spec
from diskspec.codegen.generate import codegen_main

from .conftest import FORMATS

SPECS = sorted(FORMATS.glob("*.ksy"))

GOOD = """\
meta:
  id: tiny
  endian: le
seq:
  - id: magic
    contents: TINY
  - id: count
    type: u2
  - id: items
    type: u4
    repeat: expr
    repeat-expr: count
"""

# (broken spec text, line the error must name, fragment of the message)
BROKEN = [
    ("meta:\n  id: tiny\nseq:\n  - id: a\n    type: u4\n", 5, "no endianness"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u7\n", 6, "unknown type"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u2\n  - id: a\n    type: u2\n",
     7, "duplicate id"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u2\n    repeat: until\n",
     7, "only 'expr' and 'eos'"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    size: (1 +\n", 6, "size"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: b3\n  - id: b\n    type: u1\n",
     7, "byte boundary"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u1\n    enum: nope\n", 7,
     "unknown enum"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u1\n    process: xor(1)\n", 7,
     "supported Kaitai subset"),
    ("meta:\n  id: tiny\n  endian: le\nseq:\n  - id: a\n    type: u1\n  - id: b\n    size: nope\n",
     7, "unknown name 'nope'"),
    ("meta:\n  id: Tiny\n", 2, "snake_case"),
    ("meta: [1\n", 2, "YAML error"),
    ("meta:\n  id: tiny\n  endian: le\n-checksum: {algorithm: md5, field: a}\n", 4, "crc32c"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BROKEN)
def test_broken_spec_gives_one_located_line(tmp_path: Path, text: str, line: int,
                                            fragment: str) -> None:
    spec = tmp_path / "tiny.ksy"
    spec.write_text(text)
    with pytest.raises(SpecError) as info:
        generate(spec)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(rf"^{re.escape(str(spec))}:{line}: [^:]*: ", message), message
    assert fragment in message


def test_cli_reports_broken_spec_without_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.ksy"
    spec.write_text(BROKEN[1][0])
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "codegen", str(spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and f"{spec}:6:" in proc.stderr


def test_generation_is_deterministic_and_checked_in() -> None:
    assert SPECS, "no specs found"
    for spec in SPECS:
        first, second = generate(spec), generate(spec)
        assert first == second
        assert spec.with_suffix(".py").read_text() == first, f"{spec.name}: stale, run codegen"
        assert "do not edit" in first.splitlines()[0]
        assert load_spec(spec).sha256 in first


def test_check_catches_hand_edit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "vhd.ksy"
    shutil.copy(FORMATS / "vhd.ksy", spec)
    assert codegen_main([str(spec)]) == 0
    assert codegen_main(["--check", str(spec)]) == 0
    module = tmp_path / "vhd.py"
    module.write_text(module.read_text().replace("SIZE: ClassVar[int] = 512",
                                                 "SIZE: ClassVar[int] = 511"))
    capsys.readouterr()
    assert codegen_main(["--check", str(spec)]) == 1
    assert f"stale: {module}" in capsys.readouterr().err
    assert codegen_main([str(spec)]) == 0  # regenerating repairs it
    assert codegen_main(["--check", str(spec)]) == 0


def test_editing_a_field_changes_the_codec(tmp_path: Path) -> None:
    """The format engineer's loop: rename/retype a field, regenerate, see it in the code."""
    spec = tmp_path / "tiny.ksy"
    spec.write_text(GOOD)
    before = generate(spec)
    spec.write_text(GOOD.replace("type: u2", "type: u4").replace("id: count", "id: n_items")
                    .replace("repeat-expr: count", "repeat-expr: n_items"))
    after = generate(spec)
    assert "n_items: int" in after and "n_items: int" not in before
    # the generated module imports its support relatively: load it inside diskspec.formats
    import importlib.util

    import diskspec.formats as formats_pkg

    target = Path(formats_pkg.__path__[0]) / "_test_tiny.py"
    try:
        target.write_text(after)
        mod_spec = importlib.util.spec_from_file_location("diskspec.formats._test_tiny", target)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module  # dataclasses resolve annotations through it
        mod_spec.loader.exec_module(module)
        tiny = module.Tiny.parse(b"TINY" + (2).to_bytes(4, "little") + bytes(range(8)))
        assert tiny.n_items == 2 and list(tiny.items) == [0x03020100, 0x07060504]
        assert tiny.build() == b"TINY" + (2).to_bytes(4, "little") + bytes(range(8))
    finally:
        sys.modules.pop("diskspec.formats._test_tiny", None)
        target.unlink(missing_ok=True)


def test_unknown_command_is_an_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "frobnicate"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Command not found: frobnicate" in proc.stderr  # as qemu-img


def _fake_checkout(root: Path) -> Path:
    """A minimal diskspec checkout: pyproject.toml naming diskspec, and one spec."""
    (root / "formats").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "diskspec"\n')
    shutil.copy(FORMATS / "vhd.ksy", root / "formats" / "vhd.ksy")
    return root


def test_codegen_works_on_the_checkout_of_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = _fake_checkout(tmp_path / "co")
    (root / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(root / "sub" / "dir")  # found upwards
    assert codegen_main(["--check"]) == 1  # this checkout is stale, whatever the installed copy says
    assert f"stale: {root / 'formats' / 'vhd.py'}" in capsys.readouterr().err
    assert codegen_main([]) == 0
    assert (root / "formats" / "vhd.py").read_text() == (FORMATS / "vhd.py").read_text()
    assert codegen_main(["--check"]) == 0
    assert sorted(p.name for p in (root / "formats").iterdir()) == ["vhd.ksy", "vhd.py"]


def test_codegen_without_a_checkout_says_so_with_exit_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')  # not ours
    (tmp_path / "formats").mkdir()
    shutil.copy(FORMATS / "vhd.ksy", tmp_path / "formats" / "vhd.ksy")
    monkeypatch.chdir(tmp_path)
    for argv in ([], ["--check"], ["--root", str(tmp_path)]):
        assert codegen_main(argv) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("no diskspec checkout" in err or "not a diskspec checkout" in err)
    assert not (tmp_path / "formats" / "vhd.py").exists()
    root = _fake_checkout(tmp_path / "elsewhere")
    assert codegen_main(["--root", str(root)]) == 0 and (root / "formats" / "vhd.py").is_file()


def test_codegen_help_documents_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "diskspec.runtime", "codegen", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for line in ("exit codes:", "  0  done", "  1  --check", "  2  a spec", "  3  no diskspec checkout",
                 "--root DIR"):
        assert line in proc.stdout
