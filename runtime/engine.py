"""The engine interface: one engine per format, like a QEMU block driver.

An engine maps guest offsets to extents of its file, reads into caller buffers, writes
(allocating in the crash-safe order of its format), flushes, reports info and checks.
The default `readinto` works from `extents()`; engines override it with a fast path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .backend import Backend
from .errors import CorruptError, ReadOnlyError, UnsupportedFeatureError
from .extent import Extent, State
from .pages import PageCache
from .policy import Policy

if TYPE_CHECKING:
    from .image import Image


@dataclass
class CheckResult:
    """What `check` found, in qemu-img's vocabulary."""

    corruptions: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    check_errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.corruptions or self.leaks or self.check_errors)


@dataclass(frozen=True)
class Snapshot:
    """An internal snapshot, in the fields of qemu-img's `snapshot -l` and `info`."""

    id: str
    name: str
    #: the guest disk size the snapshot recorded
    disk_size: int
    vm_state_size: int = 0
    date_sec: int = 0
    date_nsec: int = 0
    vm_clock_nsec: int = 0
    icount: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, declared once with the engine: the command line (`-o help`,
    `check`, `rebase`), the tools and the conformance kit read it instead of trying and
    catching UnsupportedFeatureError."""

    create: bool = False
    write: bool = False
    #: images over a backing (parent) file: differencing VHD/VHDX, qcow2's backing file
    backing: bool = False
    #: can rewrite the reference to its backing file (rebase)
    rebase: bool = False
    resize: bool = False
    check: bool = False
    repair: bool = False
    #: can be the parent that `commit` writes into
    commit_target: bool = False
    #: internal snapshots
    snapshots: bool = False
    #: guest offset N is byte N of the file (raw): data can be copied file to file
    identity_map: bool = False
    #: create options in qemu-img's names -> their `-o help` text
    create_options: Mapping[str, str] = field(default_factory=dict)
    #: the create options that make an image over a backing file (`-b`)
    backing_create: Mapping[str, object] = field(default_factory=dict)
    #: named kinds of image and the create options that make each (the conformance kit
    #: runs its workloads over every kind; the first is the default)
    variants: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: {"default": {}})


class Engine(ABC):
    """An open image of one format. Subclasses set `format_name` and `capabilities` and
    implement the rest."""

    format_name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: a file of this format can be recognised only by its extension (fixed VHD)
    extension_only: ClassVar[bool] = False

    def __init__(self, backend: Backend):
        self.backend = backend
        self.virtual_size = 0
        self.backing: Image | None = None  # where BACKING extents read from
        self.backing_path: Path | None = None
        self.warnings: list[str] = []
        #: table entries found unusable as their table was loaded (block -> why): reads of
        #: those blocks raise, and writes are refused until `check -r` repairs the image
        self.damage: dict[int, str] = {}
        #: fsync between the steps of an allocation (off only for images being created by
        #: a converter that deletes the file on failure)
        self.barriers = True
        #: the decoded table pages of this image (open(table_cache=N) sets its limit)
        self.table_cache = PageCache()
        #: the backing file's format as the image states it (qcow2's backing format
        #: extension); None: probed when the backing file is opened
        self.backing_format: str | None = None

    # -- discovery and life cycle ------------------------------------------------------------

    @classmethod
    @abstractmethod
    def probe(cls, head: bytes, tail: bytes, path: Path) -> int:
        """How sure (0-100) that the file is ours, from its first and last 64 KiB."""

    @classmethod
    @abstractmethod
    def open(cls, path: Path, writable: bool = False, *, share: bool = False,
             **options: Any) -> Engine:
        """Open an existing image; `share` (read-only only): even while another process holds
        it under qemu's image locks (qemu's -U, see locking)."""

    @classmethod
    def create(cls, path: Path, size: int | None, **options: Any) -> Engine:
        """Create a new image (and return it open for writing)."""
        raise UnsupportedFeatureError(f"creating {cls.format_name} images")

    @property
    def writable(self) -> bool:
        return self.backend.writable

    def flush(self) -> None:
        self.backend.flush()

    def finish(self) -> None:
        """Write what closing would write (the format's "clean" state) and keep the image
        open: a caller that syncs once itself calls this, then flush(), then close().
        Formats without such a state have nothing to write."""
        return

    def close(self) -> None:
        try:
            if self.writable:
                self.finish()
        finally:
            self.backend.close()

    def barrier(self) -> None:
        """Make the writes so far durable before the next step of a crash-safe sequence."""
        if self.barriers:
            self.backend.flush()

    # -- backing chain ---------------------------------------------------------------------

    @property
    def needs_parent(self) -> bool:
        """True for images whose unallocated data lives in a parent (differencing, backing)."""
        return False

    def parent_candidates(self) -> list[tuple[str, Path]]:
        """Where the parent may be, in the order to try: (how it was found, path)."""
        return []

    def set_backing(self, parent: Image | None, path: Path | None, check_only: bool = False) -> None:
        """Make `parent` (at `path`; None: no backing file) this image's backing file; with
        `check_only`, only raise if it cannot be (nothing is written). Engines whose
        capabilities say `rebase` implement it."""
        raise UnsupportedFeatureError(f"changing the backing file of {self.format_name} images")

    def resolve_files(self, policy: Policy) -> None:  # noqa: B027 - optional hook
        """Open the files the image names besides its parent (qcow2's external data file),
        under the backing `policy`; called once, right after open."""

    @property
    def data_backend(self) -> Backend:
        """The file that DATA extents' file offsets are in (an external data file, or the
        image's own)."""
        return self.backend

    def map_recurse(self) -> bool | None:
        """Whether block status looks into the file's holes under DATA extents (qemu's
        BDRV_BLOCK_RECURSE): None, the default, where the file offset is the guest offset
        (raw, fixed VHD); an engine may say always (True) or never (False)."""
        return None

    def accept_parent(self, parent: Any, explicit: bool) -> None:  # noqa: B027 - optional hook
        """Raise ParentMissingError when `parent` (an Image) is not this image's parent.

        With `explicit` (the user named the parent) identity mismatches become warnings.
        """

    # -- mapping, reading, writing ---------------------------------------------------------

    @abstractmethod
    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        """The runs of [offset, offset+length) in guest order, clipped to the disk."""

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill `buf` with guest bytes at `offset` (the caller keeps it inside the disk)."""
        for e in self.extents(offset, len(buf)):
            part = buf[e.offset - offset : e.end - offset]
            if e.state is State.DATA:
                assert e.file_offset is not None
                self.data_backend.readinto(e.file_offset, part)
            elif e.state is State.BACKING and self.backing is not None:
                self.backing.read_at(e.offset, part)
            else:
                part[:] = bytes(len(part))

    def fast_reader(self, general: Callable[[int, memoryview], None]
                    ) -> Callable[[int, memoryview], None]:
        """A positioned reader for the common case that hands everything else (reads past the
        end, holes, split blocks) to `general`. Engines specialise it; this one does nothing."""
        return general

    def fast_pread(self, general: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
        """Like fast_reader, for reads that return bytes."""
        return general

    def range_is_zero(self, offset: int, length: int) -> bool:
        """True when the guest bytes [offset, offset+length) all read as zero."""
        buf = bytearray(min(4 << 20, length))
        view = memoryview(buf)
        pos = offset
        while pos < offset + length:
            n = min(len(buf), offset + length - pos)
            self.readinto(pos, view[:n])
            if any(view[:n]):
                return False
            pos += n
        return True

    def write(self, offset: int, data: memoryview) -> None:
        raise UnsupportedFeatureError(f"writing {self.format_name} images")

    def require_writable(self, repairing: bool = False) -> None:
        """Writes need a read-write open, and (but for `check -r`, `repairing`) an image in
        which no corruption was found: writing into damage makes it worse (qemu's qcow2
        corrupt bit)."""
        if not self.writable:
            raise ReadOnlyError(f"{self.backend.path} is open read-only")
        if self.damage and not repairing:
            first = next(iter(self.damage.values()))
            raise ReadOnlyError(f"{self.backend.path} is corrupt ({first}; {len(self.damage)} "
                                "damaged table entries): writes are refused until "
                                "`diskspec check -r all` repairs it")

    def damage_error(self, block: int) -> CorruptError:
        """The error a read of a block with a damaged table entry raises."""
        return CorruptError(f"{self.backend.path}: {self.damage[block]}")

    def note_damage(self, damage: dict[int, str]) -> None:
        """Record damaged table entries found on open, with one warning for all of them."""
        if not damage:
            return
        self.damage.update(damage)
        shown = ", ".join(map(str, list(damage)[:8])) + (", ..." if len(damage) > 8 else "")
        self.warnings.append(f"{len(damage)} table entries are corrupt (blocks {shown}): "
                             f"{next(iter(damage.values()))}; reading those blocks fails, "
                             "writes are refused until `check -r all` repairs the image")

    # -- tools -----------------------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """The internal snapshots (none for formats without them)."""
        return []

    def info(self) -> dict[str, Any]:
        return {"format": self.format_name, "virtual-size": self.virtual_size}

    def check(self, repair: bool = False) -> CheckResult:
        raise UnsupportedFeatureError(f"checking {self.format_name} images")

    def resize(self, new_size: int) -> None:
        raise UnsupportedFeatureError(f"resizing {self.format_name} images")
