"""Small arithmetic shared by the engines."""

from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return -(-a // b) * b


ZEROS = memoryview(bytes(1 << 20))  # read-only; slices of it copy nothing


def fill_zero(view: memoryview) -> None:
    """Zero a buffer in place, 1 MiB at a time (no allocation per call)."""
    step = len(ZEROS)
    if len(view) <= step:
        view[:] = ZEROS[: len(view)]
        return
    for i in range(0, len(view), step):
        chunk = view[i : i + step]
        chunk[:] = ZEROS[: len(chunk)]
