"""Issue 14 item 8: what the commands say about damaged images, and that damage never grows.

- `dissect` exit codes: 0 no problem found, 2 problems found (a damage note or a failed
  verdict anywhere in the tree), 1 could not run;
- `check -r` exit codes reflect what remains after the repair (qemu-img's semantics): 0 when
  everything was repaired, 2 corruptions remain, 3 only leaks remain -- VHD and VHDX;
- a fixed VHD whose geometry claims more data than the file holds: corruption, and the disk
  is cut to the data, so the footer is never read or written as guest data;
- a dirty VHDX log that writes past the file's plausible end: CorruptError naming the file,
  nothing replayed (read-write) or kept in memory (read-only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import diskspec.runtime as ds
from diskspec.formats import vhd, vhdx
from diskspec.runtime.dissect import dissect
from diskspec.runtime.engines.vhd.engine import VhdEngine
from diskspec.runtime.errors import CorruptError, DiskspecError

from .test_cli import ds_run
from .test_vhd_engine import footer_of, header_of, patch_footer
from .test_vhdx_engine import (
    BAT_GUID,
    FULLY_PRESENT,
    HEADER_SLOTS,
    REGION_SLOTS,
    age,
    current_header,
    file_state,
    log_entry,
    new_guid,
    peek,
    poke,
    put_header,
    region,
)

KiB, MiB, TiB = 1 << 10, 1 << 20, 1 << 40


def vhdx_image(path: Path) -> Path:
    """An 8 MiB dynamic VHDX (1 MiB blocks), blocks 0-2 written."""
    with ds.create(path, "vhdx", 8 * MiB, block_size=MiB) as image:
        image.write(b"x" * (3 * MiB))
    return path


def vhd_image(path: Path, subformat: str = "dynamic") -> Path:
    with ds.create(path, "vpc", 8 * MiB, subformat=subformat) as image:
        image.write(b"x" * (3 * MiB))
    return path


def current_slot(path: Path) -> int:
    with ds.open(path) as image:
        slot: int = image.engine.header_slot  # type: ignore[attr-defined]
    return slot


# -- a. dissect's exit codes --------------------------------------------------------------------


def test_dissect_exits_0_on_clean_images(tmp_path: Path) -> None:
    for path, struct in ((vhdx_image(tmp_path / "a.vhdx"), "header1"),
                         (vhd_image(tmp_path / "a.vhd"), "footer"),
                         (vhd_image(tmp_path / "f.vhd", "fixed"), "footer")):
        for args in ((), ("--output=json",), ("--plain", "--bat"), ("--hexdump", struct)):
            code, out, errs = ds_run("dissect", *args, path)
            assert code == 0, (path.name, args, errs)
        assert json.loads(ds_run("dissect", "--output=json", path)[1])["damaged"] is False


def damaged_images(tmp_path: Path) -> list[Path]:
    header = vhdx_image(tmp_path / "header.vhdx")
    poke(header, HEADER_SLOTS[1 - current_slot(header)] + 1000, b"\x01")  # only the CRC sees it
    region_table = vhdx_image(tmp_path / "region.vhdx")
    poke(region_table, REGION_SLOTS[1] + 100, b"\x01")
    copy = vhd_image(tmp_path / "copy.vhd")
    poke(copy, 100, b"\x01")  # the footer copy at offset 0
    bat = vhd_image(tmp_path / "bat.vhd")
    poke(bat, header_of(bat).table_offset + 4 * 3, (0x7FFFFF).to_bytes(4, "big"))  # past EOF
    return [header, region_table, copy, bat]


def test_dissect_exits_2_when_it_finds_problems(tmp_path: Path) -> None:
    for path in damaged_images(tmp_path):
        assert dissect(path).all_damage(), path.name
        code, out, errs = ds_run("dissect", path)
        assert code == 2, (path.name, errs)
        assert "problem(s) found" in out and not errs
        code, out, _ = ds_run("dissect", "--output=json", path)
        assert code == 2
        doc = json.loads(out)
        assert doc["damaged"] is True and doc["damage"]
        struct = "header1" if path.suffix == ".vhdx" else "footer"
        assert ds_run("dissect", "--hexdump", struct, path)[0] == 2


def test_dissect_exits_1_when_it_cannot_run(tmp_path: Path) -> None:
    path = vhdx_image(tmp_path / "a.vhdx")
    for args in ((tmp_path / "missing.vhdx",), (tmp_path,), ("--output=xml", path),
                 ("--hexdump", "no-such-structure", path)):
        code, _, errs = ds_run("dissect", *args)
        assert code == 1, (args, errs)
        assert errs.count("\n") == 1


def test_dissect_help_documents_the_exit_codes() -> None:
    code, out, _ = ds_run("dissect", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "0 the file was dissected and no problem was found" in text
    assert "2 the file was dissected and problems were found" in text
    assert "1 dissect could not run" in text
    usage = " ".join(ds_run("--help")[1].split())
    assert "dissect: 0 no problem found, 2 problems found" in usage


def test_a_failed_verdict_is_a_problem(tmp_path: Path) -> None:
    """A verdict that fails without a damage note of its own (a checksum the read budget
    did not allow to compute) still counts: it gets a damage note, and dissect exits 2."""
    path = vhdx_image(tmp_path / "log.vhdx")
    fake = vhdx.LogEntryHeader.new(entry_length=MiB - 4096, sequence_number=1,
                                   descriptor_count=100_000).build()
    poke(path, current_header(path).log_offset, (fake + bytes(4096 - len(fake))) * 256)
    root = dissect(path)
    failed = [(p, n) for p, n in root.walk() for v in n.verdicts if not v.ok]
    assert failed
    assert all(n.damage for _, n in failed), [p for p, n in failed if not n.damage][:3]
    assert ds_run("dissect", path)[0] == 2


# -- b. check -r: the exit code says what remains ----------------------------------------------


def damage_header(path: Path, current: bool) -> None:
    slot = current_slot(path)
    poke(path, HEADER_SLOTS[slot if current else 1 - slot] + 1000, b"\x01")


def damage_vhdx_bat(path: Path) -> None:
    poke(path, region(path, BAT_GUID).file_offset + 8 * 5, (TiB | FULLY_PRESENT).to_bytes(8, "little"))


def damage_vhd_bat(path: Path) -> None:
    poke(path, header_of(path).table_offset + 4 * 3, (0x7FFFFF).to_bytes(4, "big"))


def leak_vhd(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-512] + bytes(3 * MiB) + data[-512:])


DAMAGE: dict[str, tuple[str, Callable[[Path], None], int]] = {
    # name: (format, damage, exit code of a check before the repair)
    "vhdx-non-current-header": ("vhdx", lambda p: damage_header(p, current=False), 2),
    "vhdx-current-header": ("vhdx", lambda p: damage_header(p, current=True), 2),
    "vhdx-region-table": ("vhdx", lambda p: poke(p, REGION_SLOTS[1] + 100, b"\x01"), 2),
    "vhdx-bat-past-eof": ("vhdx", damage_vhdx_bat, 2),
    "vhd-footer-copy": ("vpc", lambda p: poke(p, 100, b"\x01"), 2),
    "vhd-bat-past-eof": ("vpc", damage_vhd_bat, 2),
    "vhd-leak": ("vpc", leak_vhd, 3),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_check_repair_all_that_repairs_everything_exits_0(tmp_path: Path, name: str) -> None:
    fmt, damage, before = DAMAGE[name]
    path = vhdx_image(tmp_path / "d.vhdx") if fmt == "vhdx" else vhd_image(tmp_path / "d.vhd")
    damage(path)
    assert ds_run("check", path)[0] == before
    code, out, errs = ds_run("check", "-r", "all", path)
    assert code == 0, (out, errs)
    assert "Repairing:" in errs and "ERROR" not in errs and "Leaked" not in errs
    assert "were found and repaired" in out and "No errors were found on the image." in out
    assert "errors were found on the image." not in out.replace("No errors", "")
    assert ds_run("check", path)[0] == 0  # and it really is clean


def test_check_repair_json_counts_the_fixed_and_nothing_remaining(tmp_path: Path) -> None:
    path = vhdx_image(tmp_path / "d.vhdx")
    damage_header(path, current=False)
    code, out, _ = ds_run("check", "-r", "all", "--output=json", path)
    doc = json.loads(out)
    assert code == 0
    assert doc.get("corruptions-fixed") == 1 and "corruptions" not in doc
    # and the engine forgets the damage it repaired: info has no warning about it any more
    assert "warnings" not in json.loads(ds_run("info", "--output=json", path)[1])


def test_check_repair_leaks_leaves_corruptions_and_exits_2(tmp_path: Path) -> None:
    path = vhdx_image(tmp_path / "d.vhdx")
    damage_header(path, current=False)
    assert ds_run("check", "-r", "leaks", path)[0] == 2  # corruption: -r leaks changes nothing
    assert ds_run("check", "-r", "all", path)[0] == 0


def test_check_repair_that_leaves_a_corruption_exits_2(tmp_path: Path) -> None:
    path = overrun_vhd(tmp_path)  # not repairable: which size is meant only the user knows
    code, _, errs = ds_run("check", "-r", "all", path)
    assert code == 2 and "ERROR the geometry" in errs


# -- c. a fixed VHD whose geometry claims more than the file holds ------------------------------


def overrun_vhd(tmp_path: Path) -> Path:
    """A qemu-style fixed VHD (geometry 121/4/17 = its 4212736 bytes of data) whose geometry
    is patched to 125/4/17: 4352000 bytes, more than the file holds before its footer."""
    path = tmp_path / "overrun.vhd"
    with ds.create(path, "vpc", 4 * MiB, subformat="fixed") as image:
        image.write(b"y" * image.size)
    patch_footer(path, disk_geometry=vhd.DiskGeometry(125, 4, 17))
    return path


def test_geometry_past_the_data_of_a_fixed_vhd(tmp_path: Path) -> None:
    path = overrun_vhd(tmp_path)
    held = path.stat().st_size - 512
    footer = path.read_bytes()[-512:]
    with ds.open(path) as image:
        assert image.size == held  # cut to the data, not the geometry's 4352000
        assert any("claims 4352000 bytes" in w and str(path) in w for w in image.engine.warnings)
        data = image.read()
        assert data == b"y" * held  # never the footer's bytes
        image.seek(held - 512)
        assert image.read(4096) == b"y" * 512
        result = image.engine.check()
        assert any("claims 4352000 bytes" in c for c in result.corruptions)
    code, out, errs = ds_run("check", path)
    assert code == 2 and "ERROR the geometry 125/4/17" in errs
    assert ds_run("dissect", path)[0] == 2
    with ds.open(path, "r+") as image:
        image.seek(held - 512)
        image.write(b"z" * 512)  # the last sector of the disk: just before the footer
        image.seek(held)
        with pytest.raises(DiskspecError):
            image.write(b"q" * 512)
        with pytest.raises(DiskspecError):
            image.engine.write(held - 512, memoryview(b"q" * 1024))
    raw = path.read_bytes()
    assert len(raw) == held + 512
    assert raw[-512:] == footer and raw[held - 512 : held] == b"z" * 512


def test_geometry_that_fits_is_not_cut(tmp_path: Path) -> None:
    """The size rule itself is unchanged where the geometry fits the data (the geometry may
    claim less than the file holds: the rest is slack)."""
    path = tmp_path / "fits.vhd"
    with ds.create(path, "vpc", 4 * MiB, subformat="fixed") as image:
        size = image.size
    patch_footer(path, disk_geometry=vhd.DiskGeometry(120, 4, 17))
    with ds.open(path) as image:
        assert image.size == 120 * 4 * 17 * 512 < size
        assert not image.engine.warnings
        assert image.engine.check().clean
    assert footer_of(path).current_size == size


def test_resize_of_a_cut_fixed_vhd_gives_a_consistent_image(tmp_path: Path) -> None:
    path = overrun_vhd(tmp_path)
    with ds.open(path, "r+") as image:
        image.engine.resize(8 * MiB)
        assert isinstance(image.engine, VhdEngine) and not image.engine.size_overrun
    with ds.open(path) as image:
        assert image.engine.check().clean and not image.engine.warnings
        assert image.read(4096) == b"y" * 4096


# -- d. a dirty VHDX log that writes past the file's plausible end -----------------------------


def dirty(path: Path, writes: list[tuple[int, bytes | int]], last: int | None = None) -> None:
    """One valid log entry (checksummed) with `writes`, the header naming its log GUID."""
    size = path.stat().st_size
    guid = new_guid()
    poke(path, current_header(path).log_offset,
         bytes(log_entry(7, 0, guid, writes, size // MiB * MiB, size if last is None else last)))
    put_header(path, log_guid=guid)
    age(path)


def bat_page(path: Path) -> tuple[int, bytes]:
    at = region(path, BAT_GUID).file_offset
    return at, peek(path, at, 4096)


@pytest.mark.parametrize("mode", ["r", "r+"])
@pytest.mark.parametrize("case", ["zero-descriptor-16T", "data-descriptor-16T",
                                  "last-file-offset-16T", "both-16T"])
def test_log_writing_past_the_plausible_end_is_corrupt(tmp_path: Path, case: str, mode: str) -> None:
    path = vhdx_image(tmp_path / "dirty.vhdx")
    writes: list[tuple[int, bytes | int]] = [bat_page(path)]
    last = None
    if case.startswith(("zero", "both")):
        writes.append((16 * TiB, 4096))
    if case.startswith("data"):
        writes.append((16 * TiB, b"d" * 4096))
    if case.startswith(("last", "both")):
        last = 16 * TiB + 4096
    dirty(path, writes, last)
    state = file_state(path)
    with pytest.raises(CorruptError) as caught, ds.open(path, mode) as image:
        image.read(4096)
    assert str(path) in str(caught.value)
    assert file_state(path) == state  # nothing replayed, the file not grown
    code, _, errs = ds_run("check", path)
    assert code == 1 and str(path) in errs
    assert file_state(path) == state


def test_log_growing_the_file_within_its_plausible_end_still_replays(tmp_path: Path) -> None:
    """A zero descriptor for the next MiB past the end (as an allocation through the log
    would write it), within the entry's last_file_offset and what the layout can need."""
    path = vhdx_image(tmp_path / "dirty.vhdx")
    with ds.open(path) as image:
        content = image.read()
    size = path.stat().st_size
    end = -(-size // MiB) * MiB + MiB
    dirty(path, [bat_page(path), (end - MiB, MiB)], last=end)
    with ds.open(path) as image:  # in memory
        assert image.read() == content
    assert path.stat().st_size == size
    with ds.open(path, "r+") as image:
        assert image.read() == content
    assert path.stat().st_size == end
    assert current_header(path).is_log_guid_zero
    assert ds_run("check", path)[0] in (0, 3)  # the zeroed MiB is a leak at most


def test_log_growth_past_what_the_layout_can_need(tmp_path: Path) -> None:
    """last_file_offset and the descriptor agree, but no 8 MiB disk can need a 1 GiB file."""
    path = vhdx_image(tmp_path / "dirty.vhdx")
    dirty(path, [bat_page(path), (1 << 30, 4096)], last=(1 << 30) + 4096)
    state = file_state(path)
    with pytest.raises(CorruptError, match="can need"):
        ds.open(path, "r+").close()
    assert file_state(path) == state



# -- a VHDX BAT entry into the metadata (item 4) -------------------------------------------------


def test_a_vhdx_block_over_the_log_is_corruption(tmp_path: Path) -> None:
    path = vhdx_image(tmp_path / "meta.vhdx")
    with ds.open(path) as image:
        engine = image.engine
        at = engine.bat_region.file_offset + 8 * 1  # type: ignore[attr-defined]
        log_at = engine.header.log_offset  # type: ignore[attr-defined]
    with open(path, "r+b") as f:
        f.seek(at)
        f.write((log_at | FULLY_PRESENT).to_bytes(8, "little"))
    with ds.open(path) as image:
        assert image.pread(0, 4) == b"xxxx"
        with pytest.raises(CorruptError, match=r"block 1: .* into the metadata"):
            image.pread(MiB, 4096)
    code, out, err = ds_run("map", "--output=json", str(path))
    assert code != 0 and "into the metadata" in err and f'"offset": {log_at}' not in out
    code, out, _ = ds_run("check", str(path))
    assert code == 2 and "1 errors were found" in out
    with ds.open(path, "r+") as image:
        image.pread(0, 4)  # loads the BAT page that holds block 1 too: the damage is found
        with pytest.raises(DiskspecError, match="corrupt"):
            image.write(b"y")
