"""Small arithmetic shared by the engines."""

from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return -(-a // b) * b


_ZEROS = bytes(1 << 20)


def fill_zero(view: memoryview) -> None:
    """Zero a buffer in place, 1 MiB at a time (no allocation per call)."""
    for i in range(0, len(view), len(_ZEROS)):
        chunk = view[i : i + len(_ZEROS)]
        chunk[:] = _ZEROS[: len(chunk)]
