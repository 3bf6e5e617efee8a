"""Internal snapshots on the command line (issue 17): `convert -l` in every form qemu-img
takes, byte for byte as qemu-img 7.2 converts (sha256 of the output) or failing with its
words; `--snapshot` of info, map, compare and dissect, checked against qemu-img on a copy
with the snapshot applied (`snapshot -a`) or on qemu's own `convert -l` output."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_cli_parity import ds, qemu

MIB = 1 << 20


@pytest.fixture
def snapshotted(tmp_path: Path, qemu_img: str, qemu_io: str) -> Path:
    """A qcow2 with snapshots 1 'first', 2 'second', 3 '3' and 4 '1' (a name that is
    another's ID), each after different writes, and more writes after the last."""
    path = tmp_path / "s.qcow2"
    qemu(qemu_img, "create", "-q", "-f", "qcow2", path, "8M")

    def io(command: str) -> None:
        subprocess.run([qemu_io, "-f", "qcow2", "-c", command, str(path)], check=True,
                       capture_output=True)

    for pattern, name in ((1, "first"), (2, "second"), (3, "3"), (4, "1")):
        io(f"write -P {pattern} {pattern * MIB} 65536")
        assert qemu(qemu_img, "snapshot", "-c", name, path)[0] == 0
    io("write -P 5 0 4096")
    io(f"write -z {MIB} 65536")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arg", ["1", "first", "second", "3", "4", "snapshot.name=first",
                                 "snapshot.id=2", "snapshot.name=1", "snapshot.id=1",
                                 "snapshot.id=1,snapshot.name=first",
                                 "snapshot.id=1,snapshot.name=second", "nope",
                                 "snapshot.name=nope", "snapshot.foo=1", "snapshot.id"])
def test_convert_l_as_qemu(snapshotted: Path, tmp_path: Path, qemu_img: str, arg: str) -> None:
    q_out, d_out = tmp_path / "q.raw", tmp_path / "d.raw"
    q = qemu(qemu_img, "convert", "-l", arg, "-O", "raw", snapshotted, q_out)
    d = ds("convert", "-l", arg, "-O", "raw", snapshotted, d_out)
    assert q[0] == d[0], (q, d)
    if q[0] == 0:
        assert sha(q_out) == sha(d_out)
    else:
        assert not d_out.exists()
        last = q[2].strip().splitlines()[-1].removeprefix("qemu-img: ")
        assert last.split(":")[0] in d[2], (q, d)  # "Failed to load snapshot", "Failed in parsing"


def test_convert_l_to_other_formats_and_refusals(snapshotted: Path, tmp_path: Path,
                                                 qemu_img: str) -> None:
    want = tmp_path / "want.raw"
    assert qemu(qemu_img, "convert", "-l", "second", "-O", "raw", snapshotted, want)[0] == 0
    for fmt in ("vpc", "vhdx"):
        out = tmp_path / f"d.{fmt}"
        assert ds("convert", "-l", "snapshot.name=second", "-O", fmt, snapshotted, out)[0] == 0
        assert qemu(qemu_img, "compare", "-f", fmt, "-F", "raw", out, want)[0] == 0
    raw = tmp_path / "r.raw"
    qemu(qemu_img, "create", "-q", "-f", "raw", raw, "1M")
    for args in (("-l", "x", raw), ("-l", "1", snapshotted, snapshotted)):
        q = qemu(qemu_img, "convert", *args, tmp_path / "o.raw")
        d = ds("convert", *args, tmp_path / "o.raw")
        assert q[0] == d[0] == 1
        text = q[2].removeprefix("qemu-img: ").splitlines()[0]
        assert text in d[2], (q, d)


def applied(qemu_img: str, image: Path, snapshot: str) -> Path:
    """A copy of `image` with `snapshot` applied by qemu-img: its active layer is the
    snapshot's, over the same clusters."""
    copy = image.with_name(f"applied-{snapshot}.qcow2")
    shutil.copy(image, copy)
    assert qemu(qemu_img, "snapshot", "-a", snapshot, copy)[0] == 0
    return copy


@pytest.mark.parametrize("snapshot", ["first", "2", "4"])
def test_info_and_map_of_a_snapshot(snapshotted: Path, qemu_img: str, snapshot: str) -> None:
    copy = applied(qemu_img, snapshotted, snapshot)
    theirs = qemu(qemu_img, "map", "--output=json", copy)
    mine = ds("map", "--output=json", "--snapshot", snapshot, snapshotted)
    assert theirs[0] == mine[0] == 0 and theirs[1] == mine[1]
    info = json.loads(ds("info", "--output=json", "--snapshot", snapshot, snapshotted)[1])
    q_info = json.loads(qemu(qemu_img, "info", "--output=json", copy)[1])
    assert info["virtual-size"] == q_info["virtual-size"]
    assert ds("info", "--snapshot", "nope", snapshotted)[2].endswith(
        "Failed to load snapshot: Can't find snapshot\n")


def test_compare_snapshots(snapshotted: Path, tmp_path: Path, qemu_img: str) -> None:
    exports = {}
    for name in ("first", "second", "3"):
        exports[name] = tmp_path / f"{name}.raw"
        qemu(qemu_img, "convert", "-l", name, "-O", "raw", snapshotted, exports[name])
    for a, b in (("first", "second"), ("3", "second"), ("first", "first")):
        q = qemu(qemu_img, "compare", exports[a], exports[b])
        d = ds("compare", "--snapshot", a, "--b-snapshot", b, snapshotted, snapshotted)
        assert (q[0], q[1]) == (d[0], d[1]), (a, b, q, d)
    q = qemu(qemu_img, "compare", exports["second"], snapshotted)
    d = ds("compare", "--snapshot", "second", snapshotted, snapshotted)
    assert (q[0], q[1]) == (d[0], d[1])
    d = ds("compare", "--snapshot", "nope", snapshotted, snapshotted)
    assert d[0] == 2 and "Can't find snapshot" in d[2]


def test_dissect_one_snapshot(snapshotted: Path) -> None:
    code, out, _ = ds("dissect", "--output=json", "--snapshot", "snapshot.name=1", snapshotted)
    assert code == 0
    children = json.loads(out)["root"]["children"]
    entry, l1, *l2 = children
    fields = {f["name"]: f["value"] for f in entry["fields"]}
    assert entry["kind"] == "snapshot_entry" and fields["id_str"] == "4" and fields["name"] == "1"
    assert l1["kind"] == "l1_table" and l1["offset"] == fields["l1_table_offset"]
    assert l2 and all(c["kind"] == "l2_table" for c in l2)
    assert ds("dissect", "--snapshot", "9", snapshotted)[0] == 1
