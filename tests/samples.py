"""Real structures to test codecs on: taken from images qemu-img makes (vpc, vhdx, qcow2,
qed) or built by hand from the spec sheets' layout tables (fvd, add-cow).

Each sample names a type of a spec, the buffer, the offset and the params; the oracle tests
parse it with our codec, the official Kaitai compiler's code and the construct backend.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diskspec.formats import vhd


@dataclass
class Sample:
    spec: str  # meta id, e.g. "vhd"
    type_path: tuple[str, ...]
    data: bytes
    offset: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.spec}:{'::'.join(self.type_path) or '/'}:{self.label}"


def qemu_image(workdir: Path, fmt: str, size: str, options: str = "",
               writes: tuple[tuple[int, int, int], ...] = ()) -> bytes:
    """An image made by qemu-img (and written by qemu-io), returned as bytes."""
    path = workdir / f"{fmt}-{options.replace(',', '_').replace('=', '-') or 'default'}-{size}"
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if options:
        args += ["-o", options]
    subprocess.run([*args, str(path), size], check=True, capture_output=True)
    for pattern, offset, length in writes:
        subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}",
                        str(path)], check=True, capture_output=True)
    return path.read_bytes()


def vhd_samples(workdir: Path) -> Iterator[Sample]:
    for options in ("subformat=fixed", "subformat=dynamic", "subformat=dynamic,force_size=on"):
        data = qemu_image(workdir, "vpc", "10M", options, writes=((0x5A, 2 << 20, 8192),))
        tail = len(data) - 512
        yield Sample("vhd", ("footer",), data, tail, label=options)
        yield Sample("vhd", ("disk_geometry",), data, tail + 56, label=options)
        yield Sample("vhd", (), data, label=options)
        if "dynamic" in options:
            header = vhd.DynamicHeader.parse(data, 512)
            yield Sample("vhd", ("dynamic_header",), data, 512, label=options)
            yield Sample("vhd", ("parent_locator",), data, 512 + 576, label=options)
            yield Sample("vhd", ("bat",), data, header.table_offset,
                         {"num_entries": header.max_table_entries}, label=options)
    # a differencing header with a parent name and locators, built from the codecs
    child = vhd.DynamicHeader.new(
        data_offset=2**64 - 1, table_offset=1536, header_version=0x10000, max_table_entries=3,
        block_size=1 << 21, parent_unique_id=bytes(range(16)), parent_timestamp=12345,
        parent_unicode_name="parent.vhd".ljust(256, "\0"),
        parent_locators=[vhd.ParentLocator(vhd.PlatformCode.W2KU, 512, 40, 0, 4096),
                         vhd.ParentLocator(vhd.PlatformCode.W2RU, 512, 24, 0, 4608)]
        + [vhd.ParentLocator.new() for _ in range(6)]).update_checksum()
    yield Sample("vhd", ("dynamic_header",), child.build(), label="differencing")


SampleMaker = Callable[[Path], Iterator[Sample]]

MAKERS: dict[str, SampleMaker] = {
    "vhd": vhd_samples,
}


def all_samples(workdir: Path) -> list[Sample]:
    out: list[Sample] = []
    for maker in MAKERS.values():
        out += list(maker(workdir))
    return out
