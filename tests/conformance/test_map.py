"""Map agrees with data: every DATA extent's file bytes are the guest's, every ZERO extent
reads zeros, BACKING extents are the parent's, none points past the end of the file; the
command line's map says the same; a table entry that points past the end of the file is
corruption that reads, map and check report, never data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.runtime.errors import CorruptError

from ..test_cli import ds_run
from .formats import ENTRY_PAST_EOF
from .kit import Case, all_cases, build, extent_problems, standalone_cases


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_extents_agree_with_the_data(tmp_path: Path, case: Case) -> None:
    built = build(case, tmp_path / "img", fill=7)
    parent = None
    if built.parent is not None:
        with ds.open(built.parent, backing_policy="any") as p:
            parent = p.read()
    assert list(extent_problems(built, bytes(built.content), parent)) == []
    args = ["--parents=any"] if built.parent else []
    code, out, errs = ds_run("map", "--output=json", *args, "-f", case.format, built.path)
    assert code == 0, errs
    size = built.path.stat().st_size
    pos = 0
    for entry in json.loads(out):
        assert entry["start"] == pos
        pos += entry["length"]
        if entry["depth"] == 0 and entry.get("offset") is not None:
            assert entry["offset"] + entry["length"] <= size, f"map points past the end: {entry}"
            with open(built.path, "rb") as f:
                f.seek(entry["offset"])
                assert f.read(entry["length"]) == built.content[entry["start"] : pos]
    assert pos == len(built.content)


PAST_EOF = [c for c in standalone_cases()
            if c.format in ENTRY_PAST_EOF and c.variant == next(iter(c.caps.variants))]


@pytest.mark.parametrize("case", PAST_EOF, ids=lambda c: c.id)
def test_a_table_entry_past_the_end_of_the_file_is_corruption(tmp_path: Path, case: Case) -> None:
    built = build(case, tmp_path / "img", fill=None)
    with built.open("r+") as image:  # two blocks with data, one to damage, one to still read
        image.write(b"\x5a" * 4096)
        image.seek(image.size - 4096)
        image.write(b"\xa5" * 4096)
    block = ENTRY_PAST_EOF[case.format](built.path)
    name = str(built.path)
    with built.open() as image:  # opens: the rest can still be read
        image.seek(image.size - 4096)
        assert image.read(4096) == b"\xa5" * 4096
        with pytest.raises(CorruptError, match=f"block {block}") as caught:
            image.seek(0)
            image.read(4096)
        assert name in str(caught.value)
        with pytest.raises(CorruptError):
            list(image.extents())
        assert image.engine.check().corruptions
    code, out, errs = ds_run("map", "--output=json", "-f", case.format, built.path)
    assert code == 1 and name in errs and "past the end" in errs, (code, out, errs)
    code, out, errs = ds_run("check", "-f", case.format, built.path)
    assert code == 2, (code, out, errs)
    code, out, errs = ds_run("info", "-f", case.format, built.path)
    assert code == 0 and "past the end" in out, (out, errs)
    with pytest.raises(ds.errors.ReadOnlyError, match="corrupt"), built.open("r+") as image:
        image.seek(image.size // 2)
        image.write(b"x")
    code, out, errs = ds_run("check", "-r", "all", "-f", case.format, built.path)
    # repaired: the entry is dropped (its data was lost anyway); the space it had may stay
    # leaked (3) where the format cannot give it back
    assert code in (0, 3), (code, out, errs)
    with built.open("r+") as image:
        image.seek(image.size - 4096)
        assert image.read(4096) == b"\xa5" * 4096
        image.seek(0)
        image.write(b"after repair")
    with built.open() as image:
        assert not image.engine.check().corruptions
        assert image.read(12) == b"after repair"
