"""Sizes as qemu-img reads and prints them: "64M", "+1G", "1.5G"; "196 KiB", "4.39 MiB"."""

from __future__ import annotations

import math
import re

from ..errors import DiskspecError

SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
            "e": 1 << 60}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([bkmgtpe]?)\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from qemu-img's size syntax: an integer or decimal with an optional suffix
    b, k, M, G, T, P or E (powers of 1024, case-insensitive). Fractions must land on a
    whole byte count after scaling (1.5k = 1536)."""
    m = _SIZE.match(text)
    if m is None:
        raise DiskspecError(f"invalid {what} {text!r} (expected a number with an optional suffix "
                            "k, M, G, T, P or E)")
    number, suffix = str(m.group(1)), str(m.group(2))
    scale: int = SUFFIXES[suffix.lower()]
    if "." in number:
        whole, _, frac = number.partition(".")
        denom: int = 10 ** len(frac)
        value = int(whole or "0") * scale + int(frac or "0") * scale // denom
        if int(frac or "0") * scale % denom:
            raise DiskspecError(f"invalid {what} {text!r}: not a whole number of bytes")
    else:
        value = int(number) * scale
    if value >= 1 << 63:
        if what == "size":  # qemu-img's words for an image size
            raise DiskspecError(f"Invalid image size specified. Must be between 0 and "
                                f"{(1 << 63) - 1}.")
        raise DiskspecError(f"{what} {text!r} is too large")
    return value


def parse_relative_size(text: str, current: int) -> int:
    """resize's SIZE: absolute, or +N / -N relative to `current`."""
    if text[:1] in "+-":
        delta = parse_size(text[1:])
        return current + delta if text[0] == "+" else current - delta
    return parse_size(text)


def size_to_str(value: int) -> str:
    """qemu's size_to_str: binary units, three significant digits ("28 KiB", "4.39 MiB")."""
    units = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    exponent = math.frexp(value / (1000.0 / 1024.0))[1]
    i = max(0, min(len(units) - 1, int((exponent - 1) / 10)))
    return f"{value / (1 << (10 * i)):0.3g} {units[i]}B"
