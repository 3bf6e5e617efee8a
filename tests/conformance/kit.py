"""The conformance kit's cases and tools, read off the registry: every engine that can
create and write images is tested in every variant it declares (Capabilities.variants),
alone and, where it takes a backing file, over a parent of every writable format. A new
engine joins the kit by registering; nothing here names a format except the oracles'
knowledge of what qemu-img reads (asked from qemu-img itself) and the per-format damage
recipes in `damage.py`.

DISKSPEC_DEEP=1 runs many more examples per test (outside CI).
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskspec.runtime as ds
from diskspec.runtime.engine import Capabilities, Engine
from diskspec.runtime.extent import State
from diskspec.runtime.registry import engines

from ..conftest import require_tool

KiB, MiB = 1 << 10, 1 << 20
DEEP = os.environ.get("DISKSPEC_DEEP", "") not in ("", "0")
SIZE = 5 * MiB + 3 * 4096  # not a multiple of any block size: the last block is partial
SECTOR = 512


def examples(ci: int, deep: int) -> int:
    """How many hypothesis examples a test runs: `ci` in the suite, `deep` with DISKSPEC_DEEP."""
    return deep if DEEP else ci


@dataclass(frozen=True)
class Case:
    """One kind of image the kit builds: a format in one of its variants, optionally over a
    parent of another case."""

    format: str
    variant: str
    options: dict[str, Any] = field(hash=False)
    parent: Case | None = None

    @property
    def id(self) -> str:
        own = f"{self.format}-{self.variant}"
        return own if self.parent is None else f"{own}-over-{self.parent.id}"

    @property
    def caps(self) -> Capabilities:
        return engines()[self.format].capabilities


def _writable() -> list[tuple[str, type[Engine]]]:
    return [(name, cls) for name, cls in engines().items()
            if cls.capabilities.create and cls.capabilities.write]


def standalone_cases() -> list[Case]:
    return [Case(name, variant, dict(options)) for name, cls in _writable()
            for variant, options in cls.capabilities.variants.items()]


def child_cases() -> list[Case]:
    """Every engine with backing files, over the default variant of every writable format."""
    parents = [Case(name, next(iter(cls.capabilities.variants)),
                    dict(next(iter(cls.capabilities.variants.values()))))
               for name, cls in _writable()]
    out = []
    for name, cls in _writable():
        caps = cls.capabilities
        if not caps.backing:
            continue
        variant, options = next(iter(caps.variants.items()))
        # the variant's own options (block size, sector size), made a child by backing_create
        child_options = {k: v for k, v in options.items() if k not in caps.backing_create
                         and k != "force_size"} | dict(caps.backing_create)
        out += [Case(name, variant, child_options, parent) for parent in parents]
    return out


def all_cases() -> list[Case]:
    return standalone_cases() + child_cases()


def seeded_fill(image: ds.Image, shadow: bytearray, seed: int, count: int = 5) -> None:
    """A few random writes (data for parents, and for read-only and map tests)."""
    rng = random.Random(seed)
    for _ in range(count):
        offset = rng.randrange(image.size)
        data = rng.randbytes(min(rng.choice([1, 513, 4097, rng.randrange(1, 600_000)]),
                                 image.size - offset))
        image.seek(offset)
        image.write(data)
        shadow[offset : offset + len(data)] = data


@dataclass
class Built:
    """An image the kit made: its path, the parent (if any), how to open it, and the guest
    content it holds now."""

    case: Case
    path: Path
    parent: Path | None
    content: bytearray

    @property
    def open_kwargs(self) -> dict[str, Any]:
        """A raw parent is named (the backing policy takes raw parents only when named);
        other parents are found by the child's own references."""
        if self.parent is not None and self.case.parent is not None and self.case.parent.format == "raw":
            return {"parent": self.parent}
        return {}

    def open(self, mode: str = "r", **kwargs: Any) -> ds.Image:
        return ds.open(self.path, mode, format=self.case.format, **(self.open_kwargs | kwargs))

    def read(self, path: Path | None = None) -> bytes:
        with ds.open(path or self.path, format=self.case.format, **self.open_kwargs) as image:
            return image.read()

    def files(self) -> list[Path]:
        return [self.path] + ([self.parent] if self.parent else [])


def build(case: Case, d: Path, fill: int | None = None, size: int = SIZE,
          name: str = "image", dense: bool = False) -> Built:
    """Create the image of `case` in `d` (its parent first, in d/base, data in every byte:
    a child's sector that falls through to a hole would otherwise read the parent's zeros);
    with `fill`, write some seeded data into it too; `dense`: random data everywhere."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.{case.format}"
    parent = None
    if case.parent is None:
        image = ds.create(path, case.format, size, **case.options)
    else:
        parent = build(case.parent, d / "base", size=size, name="parent", dense=True).path
        image = ds.create(path, case.format, None, parent=parent, backing_policy="any",
                          **case.options)
    with image:
        image.seek(0)
        content = bytearray(image.read())
        if dense:
            content[:] = random.Random(len(content)).randbytes(len(content))
            image.seek(0)
            image.write(content)
        if fill is not None:
            seeded_fill(image, content, fill)
    return Built(case, path, parent, content)


def sha_file_state(path: Path) -> tuple[int, int, bytes]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size, path.read_bytes()


def age(*paths: Path) -> None:
    """File times an hour back, so that any write shows in the mtime."""
    import time
    past = time.time() - 3600
    for p in paths:
        os.utime(p, (past, past))


# -- qemu-img as the oracle ------------------------------------------------------------------


@functools.cache
def qemu_formats() -> frozenset[str]:
    """The formats this qemu-img supports (from its --help)."""
    out = subprocess.run([require_tool("qemu-img"), "--help"], capture_output=True, text=True,
                         check=False).stdout
    found = re.search(r"Supported formats:(.*)", out)
    assert found, "qemu-img --help lists no formats"
    return frozenset(found.group(1).split())


def qemu_read(built: Built, path: Path | None = None) -> bytes | None:
    """The guest content as qemu-img reads the image, or None when qemu-img refuses the image
    as unsupported (e.g. VHDX with 4 KiB sectors or a parent); any other failure fails."""
    if built.case.format not in qemu_formats():
        return None
    src = path or built.path
    out = src.with_name(src.name + ".qemu.raw")
    proc = subprocess.run([require_tool("qemu-img"), "convert", "-f", built.case.format, "-O", "raw",
                           str(src), str(out)], capture_output=True, text=True, check=False)
    try:
        if proc.returncode != 0:
            assert "not supported" in proc.stderr.lower() or "unsupported" in proc.stderr.lower(), \
                f"qemu-img convert {src.name}: {proc.stderr}"
            return None
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def qemu_check(built: Built) -> None:
    """`qemu-img check` finds nothing wrong (63: qemu has no checks for the format)."""
    if built.case.format not in qemu_formats():
        return
    proc = subprocess.run([require_tool("qemu-img"), "check", "-f", built.case.format, str(built.path)],
                          capture_output=True, text=True, check=False)
    text = proc.stdout + proc.stderr
    if proc.returncode == 63 or (proc.returncode == 1 and "not supported" in text.lower()):
        return  # vpc: "This image format does not support checks"; 4K VHDX: cannot open
    assert proc.returncode == 0, f"qemu-img check {built.path.name}: {proc.returncode}: {text[:800]}"


def qemu_agrees(built: Built, content: bytes) -> bool:
    """qemu-img reads the image as `content` (children alone: qemu reads no VHD parent and
    opens no VHDX one, so the child is compared with our read of it alone). Returns whether
    qemu could be asked."""
    theirs = qemu_read(built)
    if theirs is None:
        return False
    if built.parent is not None:
        with ds.open(built.path, format=built.case.format, backing=False) as alone:
            content = alone.read()
    assert theirs == content, f"qemu-img reads {built.path.name} otherwise"
    return True


# -- extents -----------------------------------------------------------------------------------


def extent_problems(built: Built, content: bytes, parent_content: bytes | None) -> Iterator[str]:
    """Where extents() disagrees with the data: DATA bytes in the file differ from the guest's,
    ZERO holds data, BACKING differs from the parent, an extent past the end of the file, or
    gaps/overlaps in the cover."""
    size = built.path.stat().st_size
    with built.open() as image, open(built.path, "rb") as raw:
        pos = 0
        for e in image.extents():
            if e.offset != pos or e.length <= 0:
                yield f"extent {e} does not continue at {pos}"
            want = content[e.offset : e.end]
            if e.state is State.ZERO and any(want):
                yield f"ZERO extent {e} holds data"
            elif e.state is State.DATA:
                if e.file_offset is None or e.file_offset + e.length > size:
                    yield f"DATA extent {e} points past the end of the file ({size})"
                else:
                    raw.seek(e.file_offset)
                    if raw.read(e.length) != want:
                        yield f"DATA extent {e}: the file's bytes are not the guest's"
            elif e.state is State.BACKING:
                base = parent_content if parent_content is not None else bytes(e.length + e.offset)
                if base[e.offset : e.end] != want:
                    yield f"BACKING extent {e} differs from the parent"
            pos = e.end
        if pos != image.size:
            yield f"extents end at {pos}, the disk at {image.size}"


def copy_tree(built: Built, d: Path) -> Built:
    """A copy of the image (and its parent) in `d`, so a test may damage it."""
    shutil.copytree(built.path.parent, d)
    parent = None if built.parent is None else d / built.parent.relative_to(built.path.parent)
    return Built(built.case, d / built.path.name, parent, bytearray(built.content))
