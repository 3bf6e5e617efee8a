"""Read-only never writes: every read-only open and every read-only command leaves the
image's bytes and mtime unchanged, and its parents'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from diskspec.runtime.errors import DiskspecError, ReadOnlyError

from ..test_cli import ds_run
from .kit import Case, age, all_cases, build, sha_file_state

# exit codes a read-only verb may give on a sound image (check: 63 for a format without
# checks; compare: 0 identical)
VERBS: list[tuple[str, ...]] = [
    ("info",), ("info", "--output=json", "--backing-chain"), ("check",), ("check", "--output=json"),
    ("map",), ("map", "--output=json"), ("measure", "-O", "raw"), ("dissect",),
]


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_read_only_opens_and_verbs_never_write(tmp_path: Path, case: Case) -> None:
    built = build(case, tmp_path / "img", fill=5)
    files = built.files()
    age(*files)
    before = {p: sha_file_state(p) for p in files}
    with built.open() as image:
        assert not image.writable()
        assert image.read() == built.content
        list(image.extents())
        image.engine.info()
        if case.caps.check:
            image.engine.check()
        attempts: list[Callable[[], object]] = [lambda: image.write(b"x"),
                    lambda: image.engine.write(0, memoryview(bytes(4096)))]
        if case.caps.repair:
            attempts.append(lambda: image.engine.check(repair=True))
        if case.caps.resize:
            attempts.append(lambda: image.engine.resize(image.size * 2))
        if image.backing is not None:
            backing = image.backing
            assert not backing.writable()
            attempts.append(lambda: backing.write(b"x"))
        for attempt in attempts:
            with pytest.raises(ReadOnlyError):
                attempt()
        image.flush()
    assert {p: sha_file_state(p) for p in files} == before
    parents = ["--parents=any"] if built.parent is not None else []
    for verb in VERBS:
        if verb[0] == "dissect":
            args: list[str | Path] = [*verb, built.path]
        else:
            args = [*verb, *parents, "-f", case.format, built.path]
        code, _, errs = ds_run(*args)
        assert code in (0, 63), f"{' '.join(map(str, verb))}: {code} {errs}"
        assert "Traceback" not in errs
    code, _, errs = ds_run("compare", *parents, "-f", case.format, "-F", case.format, built.path,
                           built.path)
    assert code == 0, errs
    out = tmp_path / "out.raw"
    code, _, errs = ds_run("convert", *parents, "-f", case.format, "-O", "raw", built.path, out)
    assert code == 0, errs
    assert out.read_bytes() == built.content
    assert {p: sha_file_state(p) for p in files} == before, "a read-only verb wrote"


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_read_only_open_of_a_damaged_image_never_writes(tmp_path: Path, case: Case) -> None:
    """Damage a careless engine might 'fix' on open: one byte in the last sector (a VHD
    footer, a raw disk's data) and one in the first 64 KiB after the first 4 KiB."""
    built = build(case, tmp_path / "img", fill=6)
    with open(built.path, "r+b") as f:
        for at in (built.path.stat().st_size - 400, 5000):
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x01]))
    files = built.files()
    age(*files)
    before = {p: sha_file_state(p) for p in files}
    try:
        with built.open() as image:
            image.read()
            list(image.extents())
            if case.caps.check:
                image.engine.check()
    except DiskspecError:
        pass  # refusing the damage is fine; writing is not
    for verb in VERBS:
        args: list[str | Path] = [*verb, built.path] if verb[0] == "dissect" else \
            [*verb, "--parents=any", "-f", case.format, built.path]
        code, _, errs = ds_run(*args)
        assert "Traceback" not in errs
    assert {p: sha_file_state(p) for p in files} == before
