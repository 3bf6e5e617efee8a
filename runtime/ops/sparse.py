"""Zero detection for sparse copies (qemu-img's -S): which pieces of a buffer are all zero.

A buffer is cut into pieces aligned to the guest disk: `[0, first)`, then `step` bytes each
(the last may be shorter). A piece is skipped only when every byte of it is zero. The scan
costs C-speed work per byte and Python work per *candidate*: only pieces whose first byte
is zero are looked at (a strided slice finds them), and a run of zero pieces is confirmed
with a few large compares (galloping), not one compare per piece.
"""

from __future__ import annotations


class ZeroScanner:
    """Finds the all-zero pieces of buffers of at most `limit` bytes."""

    def __init__(self, step: int, limit: int):
        if step <= 0:
            raise ValueError("step must be positive")
        self.step = step
        self.zeros = memoryview(bytes(max(limit, step)))

    def is_zero(self, buf: bytearray, start: int, end: int) -> bool:
        return buf.startswith(self.zeros[: end - start], start, end)

    def zero_runs(self, buf: bytearray, n: int, first: int, base: int = 0) -> list[tuple[int, int]]:
        """Merged runs [a, b) of buf[base:base+n] (offsets relative to `base`) made of whole
        all-zero pieces; `first` (1..step) is the length of the first piece (the distance to
        the next aligned boundary)."""
        if base:
            return [(a - base, b - base) for a, b in self._runs(buf, base, base + n, first)]
        return self._runs(buf, 0, n, first)

    def _runs(self, buf: bytearray, begin: int, end: int, first: int) -> list[tuple[int, int]]:
        """zero_runs over buf[begin:end], in buffer offsets."""
        step = self.step
        runs: list[tuple[int, int]] = []

        def add(a: int, b: int) -> None:
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))

        start = begin
        if first < step:  # a partial first piece
            start = min(begin + first, end)
            if start > begin and self.is_zero(buf, begin, start):
                add(begin, start)
        lim = start + (end - start) // step * step  # the end of the last whole piece
        if lim > start:
            heads = buf[start:lim:step]  # the first byte of every whole piece
            k = heads.find(0)
            while k >= 0:
                a = start + k * step
                good = self._zero_prefix(buf, a, lim - a)
                if good:
                    add(a, a + good)
                # the piece after the zero prefix holds a nonzero byte (or is past lim)
                k = heads.find(0, k + good // step + 1)
        if lim < end and self.is_zero(buf, lim, end):
            add(lim, end)
        return runs

    def _zero_prefix(self, buf: bytearray, a: int, rem: int) -> int:
        """Bytes of whole zero pieces from `a` on (a multiple of step, at most `rem`)."""
        step, zeros = self.step, self.zeros
        good, size = 0, step
        while good < rem:  # gallop: doubling compares while the run stays zero
            take = min(size, rem - good)
            if not buf.startswith(zeros[:take], a + good):
                break
            good += take
            size *= 2
        else:
            return good
        lo, hi = good, good + take  # [lo, hi) holds a nonzero byte; halve it down to a piece
        while hi - lo > step:
            mid = lo + (hi - lo) // step // 2 * step
            if buf.startswith(zeros[: mid - lo], a + lo):
                lo = mid
            else:
                hi = mid
        return lo


def data_runs(zero: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The complement of sorted, merged runs within [0, n)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for a, b in zero:
        if a > pos:
            out.append((pos, a))
        pos = b
    if pos < n:
        out.append((pos, n))
    return out
