"""Metadata tables read in pages, on demand, through one bounded cache per image.

Opening an image reads its fixed header structures only; a table (a VHD or VHDX BAT, and
the L1/L2 and refcount tables of the engines to come) is read a page at a time when an
entry of that page is first needed, decoded in bulk into an `array`, and kept in the
image's `PageCache` until the cache's byte limit pushes it out (qemu's l2-cache-size, here
`open(..., table_cache=N)`). A walk over a huge sparse disk therefore costs memory bounded by
the limit and time proportional to the pages it touches; runs of equal entries inside a page
are found in C (`tables.run_end`), never with a Python call per entry.

Pages an engine has changed stay pinned (outside the limit) until the engine has written
them to the file and calls `settle()`: the cache never drops a change nobody has written.
"""

from __future__ import annotations

import functools
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator

from .backend import Backend
from .errors import DiskspecError, TruncatedError
from .tables import other_positions, run_end

#: bytes of decoded table pages an image keeps by default: 512 K VHDX entries, 1 TiB of
#: guest in 2 MiB blocks (a walk over more reads pages again, in bounded memory)
DEFAULT_CACHE = 4 << 20
#: the smallest cache (one page of each table an engine works with at once)
MIN_CACHE = 256 << 10
#: bytes of one page of a contiguous table (a multiple of every format's sector)
PAGE_BYTES = 64 << 10

_TYPECODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def check_cache_size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < MIN_CACHE:
        raise DiskspecError(f"table_cache must be a number of bytes of at least {MIN_CACHE}, "
                            f"not {value!r}")
    return value


class PageCache:
    """The decoded table pages of one image, at most `limit` bytes of them (oldest loaded
    out first). Keys are (owner, page); owners are the tables (or an engine's own loaders,
    e.g. qcow2's L2 tables) that use `fetch`."""

    def __init__(self, limit: int = DEFAULT_CACHE):
        self.limit = check_cache_size(limit)
        self._pages: OrderedDict[tuple[object, int], tuple[array[int], Callable[[int], None]]] = \
            OrderedDict()
        self.held = 0  #: bytes held now
        self.peak = 0  #: the most bytes ever held (for tests)
        self.loads = 0  #: pages read from the file

    def fetch(self, owner: object, key: int, load: Callable[[], array[int]],
              evicted: Callable[[int], None] | None = None) -> array[int]:
        """The page `key` of `owner`, loaded with `load()` on a miss; `evicted(key)` is
        called when the cache lets it go."""
        hit = self._pages.get((owner, key))
        if hit is not None:
            self._pages.move_to_end((owner, key))
            return hit[0]
        page = load()
        self.put(owner, key, page, evicted or _nothing)
        return page

    def put(self, owner: object, key: int, page: array[int], evicted: Callable[[int], None]) -> None:
        self.loads += 1
        size = len(page) * page.itemsize
        while self._pages and self.held + size > self.limit:
            (old_owner, old_key), (old, gone) = self._pages.popitem(last=False)
            self.held -= len(old) * old.itemsize
            gone(old_key)
        old_entry = self._pages.pop((owner, key), None)
        if old_entry is not None:
            self.held -= len(old_entry[0]) * old_entry[0].itemsize
        self._pages[(owner, key)] = (page, evicted)
        self.held += size
        self.peak = max(self.peak, self.held)

    def take(self, owner: object, key: int) -> None:
        """Stop counting a page (it is pinned by its owner, or gone)."""
        entry = self._pages.pop((owner, key), None)
        if entry is not None:
            self.held -= len(entry[0]) * entry[0].itemsize

    def drop(self, owner: object) -> None:
        """Forget every page of `owner` (its table was rewritten or resized)."""
        for key in [k for k in self._pages if k[0] is owner]:
            self.take(owner, key[1])


def _nothing(_key: int) -> None:
    return


@functools.lru_cache(maxsize=16)
def _pattern(typecode: str, value: int, count: int) -> bytes:
    return (array(typecode, [value]) * count).tobytes()


class PagedTable:
    """`count` unsigned entries of `width` bytes (big- or little-endian) at `offset` in the
    backend, read PAGE_BYTES at a time. Indexing loads the page it needs; `on_load(first,
    page)` sees every page as it is read (engines look for damaged entries there, in bulk).

    The entries live in the file: `table[i] = v` changes the cached page only (and pins it);
    the engine writes `encode(first, stop)` where it belongs, then calls `settle()`."""

    def __init__(self, backend: Backend, offset: int, count: int, width: int, big_endian: bool,
                 cache: PageCache, *, name: str = "table",
                 on_load: Callable[[int, array[int]], None] | None = None):
        self.backend = backend
        self.offset = offset
        self.count = count
        self.width = width
        self.typecode = _TYPECODES[width]
        assert array(self.typecode).itemsize == width
        self.swap = big_endian != (sys.byteorder == "big")
        self.cache = cache
        self.name = name
        self.on_load = on_load
        self.per_page = PAGE_BYTES // width
        self.shift = self.per_page.bit_length() - 1
        #: pages in memory (loaded through the cache, or pinned): page number -> entries
        self._pages: dict[int, array[int]] = {}
        self._pinned: set[int] = set()

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        for _first, chunk in self.chunks():
            yield from chunk

    # -- pages -------------------------------------------------------------------------

    def page(self, number: int) -> array[int]:
        """The entries of page `number` (the last page is short)."""
        got = self._pages.get(number)
        if got is not None:
            return got
        return self.cache.fetch(self, number, lambda: self._load(number), self._evicted)

    def _load(self, number: int) -> array[int]:
        first = number << self.shift
        n = min(self.per_page, self.count - first)
        if n <= 0:
            raise IndexError(f"{self.name} page {number} is past its {self.count} entries")
        at = self.offset + first * self.width
        raw = self.backend.pread(at, n * self.width)
        if len(raw) != n * self.width:
            raise TruncatedError(f"{self.backend.path}: the {self.name} at {at:#x} is cut short by "
                                 "the end of the file", offset=at, path=self.name)
        page = array(self.typecode, raw)
        if self.swap:
            page.byteswap()
        self._pages[number] = page
        if self.on_load is not None:
            self.on_load(first, page)
        return page

    def _evicted(self, number: int) -> None:
        if number not in self._pinned:
            self._pages.pop(number, None)

    def loaded(self) -> dict[int, array[int]]:
        """Page number -> entries, for the pages in memory now: fast paths index it directly
        (`pages.get(i >> shift)`) and fall back to `page()` on a miss."""
        return self._pages

    # -- entries -----------------------------------------------------------------------

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"{self.name} entry {index} of {self.count}")
        page = self._pages.get(index >> self.shift)
        if page is None:
            page = self.page(index >> self.shift)
        return page[index & (self.per_page - 1)]

    def __setitem__(self, index: int, value: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"{self.name} entry {index} of {self.count}")
        number = index >> self.shift
        page = self.page(number)
        page[index & (self.per_page - 1)] = value
        if number not in self._pinned:
            self._pinned.add(number)
            self.cache.take(self, number)

    def settle(self) -> None:
        """The changed pages are in the file now: they may leave memory again."""
        for number in self._pinned:
            page = self._pages.get(number)
            if page is not None:
                self.cache.put(self, number, page, self._evicted)
                self.cache.loads -= 1  # not read from the file
        self._pinned.clear()

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, array[int]]]:
        """(first index, entries) over [start, stop) in page-sized pieces, for bulk scans."""
        stop = self.count if stop is None else min(stop, self.count)
        pos = start
        while pos < stop:
            number = pos >> self.shift
            base = number << self.shift
            page = self.page(number)
            hi = min(stop - base, len(page))
            lo = pos - base
            yield pos, page if lo == 0 and hi == len(page) else page[lo:hi]
            pos = base + hi

    def run_end(self, start: int, stop: int, skip: tuple[int, int] | None = None) -> int:
        """The first index in [start, stop) whose entry differs from entry `start`; with
        `skip` (period, phase) the entries at index % period == phase do not count (VHDX's
        sector bitmap entries among the payload entries). A page is looked at in C: copied,
        the skipped entries overwritten, compared whole or searched by tables.run_end."""
        stop = min(stop, self.count)
        if start >= stop:
            return start
        value = self[start]
        pos = start
        while pos < stop:
            number = pos >> self.shift
            base = number << self.shift
            page = self.page(number)
            lo, hi = pos - base, min(stop - base, len(page))
            part = page[lo:hi]
            if skip is not None:
                period, phase = skip
                at = (phase - pos) % period
                if at < len(part):
                    part[at::period] = array(self.typecode, [value]) * len(range(at, len(part), period))
            if part.tobytes() != _pattern(self.typecode, value, len(part)):
                return pos + run_end(part, 0, len(part)) if part[0] == value else pos
            pos = base + hi
        return stop

    def other_positions(self, value: int) -> Iterator[tuple[int, int]]:
        """(index, entry) of every entry that is not `value`, page by page (runs of `value`
        skipped in bulk: the cost grows with the other entries)."""
        for first, chunk in self.chunks():
            if chunk.tobytes() != _pattern(self.typecode, value, len(chunk)):
                for pos in other_positions(chunk, value):
                    yield first + pos, chunk[pos]

    def encode(self, start: int, stop: int) -> bytes:
        """Entries [start, stop) as the file holds them."""
        out = array(self.typecode)
        for _first, chunk in self.chunks(start, stop):
            out.extend(chunk)
        if self.swap:
            out.byteswap()
        return out.tobytes()

    def fill(self, start: int, stop: int, value: int) -> None:
        """Set entries [start, stop) to `value` (pinned, like any change)."""
        pos = start
        while pos < stop:
            number = pos >> self.shift
            base = number << self.shift
            page = self.page(number)
            hi = min(stop - base, len(page))
            page[pos - base : hi] = array(self.typecode, [value]) * (hi - (pos - base))
            if number not in self._pinned:
                self._pinned.add(number)
                self.cache.take(self, number)
            pos = base + hi

    def resize(self, count: int) -> None:
        """The table now has `count` entries; the file already holds them (engines write a
        table's new entries before they resize it). Cached pages are read again."""
        self.settle()
        self.cache.drop(self)
        self._pages.clear()
        self.count = count
