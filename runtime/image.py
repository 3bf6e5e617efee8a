"""Images: a standard binary file object over the guest disk, backing chains included.

    with diskspec.runtime.open("disk.vhd") as disk:
        data = disk.read(4096)
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .engine import Engine
from .errors import CorruptError, DiskspecError, ParentMissingError, ReadOnlyError
from .extent import Extent
from .pages import DEFAULT_CACHE, check_cache_size
from .policy import DEFAULT, Policy, check_policy, named_file, refusal
from .registry import engine_for, probe

MAX_CHAIN = 64  # deeper chains are treated as corrupt (they are loops in practice)


class Image(io.RawIOBase):
    """An open image: read/write/seek over the guest bytes, plus the engine's tools.

    Besides the file interface, two positioned reads leave the file position alone (safe
    for threads sharing one image): `read_at(offset, buf)` fills a buffer (bytes past the
    end read as zero) and `pread(offset, length)` returns bytes (short at the end).
    """

    def __init__(self, engine: Engine, path: Path, cache: str = "writeback",
                 table_cache: int = DEFAULT_CACHE):
        super().__init__()
        engine.table_cache.limit = check_cache_size(table_cache)
        self.engine = engine
        self.path = path
        self._pos = 0
        #: closed, as a plain attribute: IOBase's `closed` costs a getattr on the hot path
        self._shut = False
        self.cache = check_cache(cache)
        # unsafe: no barriers, no flush (qemu's cache=unsafe: for scratch images)
        engine.barriers = self.cache != "unsafe"
        self._sync_on_close = self.cache != "unsafe"
        # Positioned reads, specialised by the engine for the common case: the hot path of
        # random reads is then one closure call and one preadv/pread.
        self.read_at: Callable[[int, memoryview], None] = engine.fast_reader(self._read_at)
        self.pread: Callable[[int, int], bytes] = engine.fast_pread(self._pread)

    # -- io.RawIOBase ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The image file's name, as the file objects of `open()` have it."""
        return str(self.path)

    @property
    def mode(self) -> str:
        return "rb+" if self.engine.writable else "rb"

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"mode={self.mode!r} size={self.size}"
        return f"<diskspec Image name={self.name!r} format={self.format!r} {state}>"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self.engine.writable

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == 0 and type(offset) is int and offset >= 0 and not self._shut:
            self._pos = offset  # the common case first: random reads seek before each read
            return offset
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        if self._shut:
            raise ValueError("I/O operation on closed image")
        view = memoryview(buffer)
        if type(buffer) is not bytearray and (view.format != "B" or view.ndim != 1):
            view = view.cast("B")
        pos = self._pos
        n = self.engine.virtual_size - pos
        if n >= len(view):
            n = len(view)
        elif n <= 0:
            return 0
        else:
            view = view[:n]
        self.read_at(pos, view)
        self._pos = pos + n
        return n

    def readall(self) -> bytes:
        out = bytearray(max(0, self.size - self._pos))
        n = self.readinto(out)
        return bytes(out[:n])

    def write(self, data: Any) -> int:
        self._checkClosed()
        if not self.engine.writable:
            raise ReadOnlyError(f"{self.path} is open read-only")
        view = memoryview(data).cast("B")
        if self._pos + len(view) > self.size:
            raise DiskspecError(
                f"write of {len(view)} bytes at {self._pos} goes past the end of the disk "
                f"({self.size} bytes); resize the image first")
        if len(view):
            self.engine.write(self._pos, view)
            self._pos += len(view)
            if self.cache == "writethrough":  # durable before write() returns
                self.engine.flush()
        return len(view)

    def flush(self) -> None:
        if not self.closed and self.engine.writable and self._sync_on_close:
            self.engine.flush()

    def close(self, *, sync: bool = True) -> None:
        """Close (the parents too); `sync` False skips the final flush, for a caller that
        has made the image durable itself or does not want it durable (qemu's cache=unsafe)."""
        if not self.closed:
            self._sync_on_close = sync and self.cache != "unsafe"
            try:
                super().close()  # flushes
            finally:
                self._shut = True
                self.engine.close()
                if self.engine.backing is not None:
                    self.engine.backing.close()

    # -- guest-level helpers ---------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.engine.virtual_size

    @property
    def format(self) -> str:
        return self.engine.format_name

    @property
    def backing(self) -> Image | None:
        return self.engine.backing

    def _pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self.size - offset)))
        self._read_at(offset, memoryview(buf))
        return bytes(buf)

    def _read_at(self, offset: int, buf: memoryview) -> None:
        try:
            n = self.engine.virtual_size - offset
            if n >= len(buf):
                self.engine.readinto(offset, buf)
                return
            if n > 0:
                self.engine.readinto(offset, buf[:n])
            buf[max(n, 0):] = bytes(len(buf) - max(n, 0))
        except DiskspecError as exc:
            name_file(exc, self.path)
            raise

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """This image's own extents (BACKING where it falls through to its parent)."""
        length = self.size - offset if length is None else length
        return _named_extents(self.engine.extents(offset, min(length, self.size - offset)),
                              self.path)

    def chain(self) -> list[Image]:
        out: list[Image] = [self]
        while out[-1].backing is not None:
            out.append(out[-1].backing)
        return out


def name_file(exc: DiskspecError, path: Path) -> None:
    """Make the message of an error about the image file `path` name it, once: with two
    images at work (compare, convert), a message without a file name is ambiguous."""
    import re  # here: only an error pays for it (~3 ms at start-up otherwise)

    text = str(exc)
    if not re.search(rf"(^|[\s'\"(]){re.escape(str(path))}($|[\s'\":,;)])", text):
        exc.args = (f"{path}: {text}", *exc.args[1:])


def _named_extents(extents: Iterator[Extent], path: Path) -> Iterator[Extent]:
    try:
        yield from extents
    except DiskspecError as exc:
        name_file(exc, path)
        raise


#: qemu's cache modes (-t): "writeback" (default: barriers inside allocations, data durable
#: at flush() and close()), "writethrough" (every write durable before it returns), "unsafe"
#: (no barriers and no flush: fast, for images nobody needs after a crash)
CACHE_MODES = ("writeback", "writethrough", "unsafe")


def check_cache(value: object) -> str:
    if value not in CACHE_MODES:
        raise DiskspecError(f"cache must be one of {', '.join(CACHE_MODES)}, not {value!r}")
    return str(value)


def open(path: str | os.PathLike[str], mode: str = "r", format: str | None = None, *,  # noqa: A001
         parent: str | os.PathLike[str] | Image | None = None, backing: bool = True,
         share: bool = False, backing_policy: str = DEFAULT, cache: str = "writeback",
         table_cache: int = DEFAULT_CACHE, **options: Any) -> Image:
    """Open an image as a file object over its guest disk.

    mode: "r" (read-only, the file is never written) or "r+" (read-write).
    format: the engine ("vpc"/"vhd", "raw", ...); probed from the content when None.
    parent: open a differencing image over this parent, skipping the identity checks.
    backing: False to open the image alone (unallocated data then reads as zeros).
    backing_policy: where the parents an image names may be (see diskspec.runtime.policy):
        "confined" (default: under the image's directory, regular files, no raw parent
        unless named by `parent`) or "any" (wherever the image says, as qemu).
    share: open read-only even while another process (a running VM) holds the image, like
        qemu's -U; without it an image in use raises ImageInUseError (qemu's image locks).
    cache: "writeback" (default), "writethrough" or "unsafe", as qemu's -t (CACHE_MODES).
    table_cache: bytes of metadata table pages each image of the chain keeps in memory (as
        qemu's l2-cache-size; default pages.DEFAULT_CACHE): tables are read in pages on demand.
    options: engine options, e.g. size_rule="chs" | "current_size" for VHD.
    """
    check_cache(cache)
    check_cache_size(table_cache)
    if mode not in ("r", "rb", "r+", "rb+", "r+b"):
        raise DiskspecError(f"mode must be 'r' or 'r+', not {mode!r} (use create() for new images)")
    if share and "+" in mode:
        raise DiskspecError("share (-U) opens images read-only only")
    return _open(Path(path), "+" in mode, format, parent, backing, options, [], share,
                 check_policy(backing_policy), cache, table_cache)


def _open(path: Path, writable: bool, format: str | None,
          parent: str | os.PathLike[str] | Image | None, backing: bool,
          options: dict[str, Any], seen: list[Path], share: bool = False,
          policy: Policy = DEFAULT, cache: str = "writeback",
          table_cache: int = DEFAULT_CACHE) -> Image:
    real = path.resolve()
    if real in seen:
        raise CorruptError(f"backing chain loops back to {path}")
    if len(seen) >= MAX_CHAIN:
        raise CorruptError(f"backing chain deeper than {MAX_CHAIN} images at {path}")
    if not path.exists():
        raise ParentMissingError(f"{path}: no such file") if seen else DiskspecError(
            f"{path}: no such file")
    cls = engine_for(format) if format else None
    try:
        cls = cls or probe(path)
        engine = cls.open(path, writable=writable, share=share, **options)
    except DiskspecError as exc:
        name_file(exc, path)
        raise
    image = Image(engine, path, cache, table_cache)
    try:
        engine.resolve_files(policy)
        if backing and engine.needs_parent:
            engine.backing = _open_parent(image, parent, [*seen, real], share, policy)
    except BaseException:
        image.close()
        raise
    return image


def _open_parent(child: Image, parent: str | os.PathLike[str] | Image | None,
                 seen: list[Path], share: bool = False, policy: Policy = DEFAULT,
                 explicit: bool = True) -> Image:
    """The parent of `child`: the one the caller names (any file it likes; with `explicit`,
    identity mismatches are only warnings), else the first of the image's own candidates
    that the backing policy admits and whose identity matches."""
    engine = child.engine
    if isinstance(parent, Image):
        engine.accept_parent(parent, explicit=explicit)
        return parent
    if parent is not None:
        image = _open(Path(parent), False, None, None, True, {}, seen, share, policy, "writeback",
                      engine.table_cache.limit)
        try:
            engine.accept_parent(image, explicit=explicit)
        except BaseException:
            image.close()
            raise
        return image
    tried: list[str] = []
    for how, candidate in engine.parent_candidates():
        why = refusal(child.path, candidate, policy)
        if why is not None:
            tried.append(f"{how} {candidate} ({why})")
            continue
        image = _open(candidate, False, engine.backing_format, None, True, {}, seen, share, policy,
                      "writeback", engine.table_cache.limit)
        try:
            if policy == "confined" and image.format == "raw":
                raise ParentMissingError("a raw file is a parent only when named explicitly "
                                         "(parent=..., -b), or under backing_policy='any'")
            engine.accept_parent(image, explicit=False)
        except ParentMissingError as exc:
            image.close()
            tried.append(f"{how} {candidate} ({exc})")
            continue
        # logging is imported only here: it costs ~3 ms at every start of the command line
        import logging

        logging.getLogger(__name__).debug("%s: parent %s found by %s", child.path, candidate, how)
        engine.backing_path = candidate
        return image
    raise ParentMissingError(
        f"{child.path}: parent not found; tried " + ("; ".join(tried) or "nothing (no locator)")
        + ". Pass parent=... to open it over a parent of your choice.")


def create(path: str | os.PathLike[str], format: str, size: int | None, *,
           backing_policy: str = DEFAULT, cache: str = "writeback",
           table_cache: int = DEFAULT_CACHE, **options: Any) -> Image:
    """Create a new image and return it open read-write; `backing_policy` is open()'s, for
    the parents of the parent named by `parent=`; `cache` and `table_cache` are open()'s."""
    check_cache(cache)
    check_cache_size(table_cache)
    target = Path(path)
    if target.exists():
        raise DiskspecError(f"{target} exists; refusing to overwrite it")
    cls = engine_for(format)
    engine = cls.create(target, size, **options)
    image = Image(engine, target, cache, table_cache)
    if engine.needs_parent:
        try:
            # the parent the caller named (the engine stored it in the new image's locators),
            # held to every rule: a new child must fit its parent
            named = options.get("parent")
            named = None if named is None else named_file(target, named)
            engine.backing = _open_parent(image, named, [target.resolve()],
                                          policy=check_policy(backing_policy), explicit=False)
        except BaseException:
            image.close()
            target.unlink(missing_ok=True)  # never leave a half-made image behind
            raise
    return image
