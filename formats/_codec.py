"""Runtime support for the generated codecs: checksums, bulk integer arrays, strings, errors.

Generated modules import only this module, `errors` and the standard library.
"""

from __future__ import annotations

import functools
import sys
import zlib
from array import array
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple, TypeVar, cast

from .errors import (
    BuildError,
    CorruptError,
    TruncatedError,
    UnsupportedFeatureError,
    ValidationError,
)

__all__ = [
    "BuildError", "Buffer", "CHECKSUMS", "CorruptError", "FieldInfo", "Record", "TruncatedError",
    "ValidationError", "bits_fit", "check_contents", "checksum_with_zeroed", "crc32",
    "crc32c", "decode_str", "decode_strz", "encode_str", "enum_or_int", "fixed_bytes",
    "int_array", "int_array_bytes", "int_list_array", "invalid", "need", "need_until",
    "ones_complement_sum", "padded", "present", "strz_bytes", "UnsupportedFeatureError",
]

Buffer = bytes | bytearray | memoryview

_E = TypeVar("_E")

_LITTLE_HOST = sys.byteorder == "little"


class FieldInfo(NamedTuple):
    """One row of a type's field table, for dissection (a named tuple: every codec module
    builds its tables at import, and a tuple class is made in a quarter of a dataclass's time)."""

    name: str
    offset: int | None  # from the start of the structure; None when it depends on data
    size: int | None  # bytes; None when it depends on data; bit fields give their byte span
    doc: str
    orig_id: str | None = None
    enum: str | None = None
    bits: tuple[int, int] | None = None  # (shift inside the group, width) for bit fields
    contents: bytes | None = None  # the magic a `contents` field must hold
    rule: str | None = None  # the field's `valid` rule, as written in the spec


class Record:
    """Base of the generated record classes: the __repr__ and __eq__ dataclass would make,
    over the fields each class names in _NAMES. Written once here: dataclass would compile
    a pair for every class at import (~0.5 ms a class, 11 ms for vhdx.py), so the classes
    are declared with repr=False and eq=False."""

    __slots__ = ()
    _NAMES: ClassVar[tuple[str, ...]] = ()  # the fields shown by repr and compared by ==
    FIELDS: ClassVar[tuple[FieldInfo, ...]] = ()  # the field table (each class sets its own)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._NAMES)
        return f"{self.__class__.__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self._NAMES  # lists compare items as tuples do: `is` first, then ==
        return [getattr(self, n) for n in names] == [getattr(other, n) for n in names]


# -- checksums -----------------------------------------------------------------------------


def ones_complement_sum(data: Buffer) -> int:
    """VHD checksum: one's complement of the 32-bit byte sum."""
    return ~sum(data) & 0xFFFFFFFF


def crc32c(data: Buffer) -> int:
    """CRC-32C (Castagnoli), C-backed (the crc32c package's extension, loaded on first use)."""
    return _crc32c_function()(data)


@functools.cache
def _crc32c_function() -> Callable[[Buffer], int]:
    """The crc32c package's C function. Its extension module is loaded by itself when it can
    be found: the package's __init__ also imports importlib.metadata and a command line, ~30 ms
    at every start of every tool that reads a VHDX. Any other layout imports the package."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("crc32c")  # finds, does not import
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_crc32c{suffix}"
            ext = importlib.util.spec_from_file_location("crc32c._crc32c", path)
            if path.is_file() and ext is not None and ext.loader is not None:
                module = importlib.util.module_from_spec(ext)
                ext.loader.exec_module(module)
                fn: Callable[[Buffer], int] = module.crc32c
                return fn
    import crc32c as package

    return cast(Callable[[Buffer], int], package.crc32c)


def crc32(data: Buffer) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


CHECKSUMS: dict[str, Callable[[Buffer], int]] = {
    "ones-complement-sum": ones_complement_sum,
    "crc32c": crc32c,
    "crc32": crc32,
}


def checksum_with_zeroed(
    algorithm: str, buf: Buffer, offset: int, length: int, field_at: int, field_size: int
) -> int:
    """Checksum of buf[offset:offset+length] with the checksum field's bytes taken as zero."""
    need(buf, offset, length, "checksum")
    data = bytearray(buf[offset : offset + length])
    data[field_at : field_at + field_size] = bytes(field_size)
    return CHECKSUMS[algorithm](data)


# -- bounds --------------------------------------------------------------------------------


def need(buf: Buffer, offset: int, size: int, path: str) -> None:
    """Raise TruncatedError unless buf holds `size` bytes at `offset`."""
    if size < 0 or offset < 0 or offset + size > len(buf):
        raise TruncatedError(
            f"needs {size} bytes, only {max(0, len(buf) - offset)} available",
            offset=offset,
            path=path,
        )


def need_until(end: int, offset: int, size: int, path: str) -> None:
    """Like need(), against the end of the current (sub)stream."""
    if size < 0 or offset + size > end:
        raise TruncatedError(
            f"needs {size} bytes, only {max(0, end - offset)} available",
            offset=offset,
            path=path,
        )


# -- integers, arrays, enums -----------------------------------------------------------------

_ARRAY_CODES: dict[tuple[int, bool], str] = {}
for _code in "bBhHiIlLqQ":
    _ARRAY_CODES.setdefault((array(_code).itemsize, _code.islower()), _code)


def int_array(buf: Buffer, offset: int, count: int, width: int, signed: bool, big: bool,
              path: str) -> array[int]:
    """Decode `count` integers of `width` bytes in one call (no per-entry Python loop)."""
    size = count * width
    need(buf, offset, size, path)
    out = array(_ARRAY_CODES[(width, signed)])
    out.frombytes(buf[offset : offset + size])
    if width > 1 and big == _LITTLE_HOST:
        out.byteswap()
    return out


def int_array_bytes(values: array[int] | list[int], width: int, signed: bool, big: bool) -> bytes:
    """Encode integers as `width`-byte values, in one call where possible."""
    arr = values if isinstance(values, array) else array(_ARRAY_CODES[(width, signed)], values)
    if arr.itemsize != width:
        arr = array(_ARRAY_CODES[(width, signed)], arr)
    if width > 1 and big == _LITTLE_HOST:
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def present(value: _E | None, path: str) -> _E:
    """The value of a conditional field that an expression needs; absent means corrupt."""
    if value is None:
        raise CorruptError("field is absent but needed", path=path)
    return value


def enum_or_int(mapping: Mapping[int, _E], value: int) -> _E | int:
    """An enum member for known values; unknown values stay plain ints (never an error)."""
    return mapping.get(value, value)


# -- strings and bytes ---------------------------------------------------------------------

_CODECS = {"ASCII": "ascii", "UTF-8": "utf-8", "UTF-16LE": "utf-16-le", "UTF-16BE": "utf-16-be"}


def _errors_for(codec: str) -> str:
    # Both choices round-trip any byte string exactly.
    return "surrogatepass" if codec.startswith("utf-16") else "surrogateescape"


def _decode(raw: bytes, codec: str, encoding: str, path: str | None, offset: int | None) -> str:
    """Decode with the lossless handlers; what they cannot take (UTF-16 of odd length) is
    corruption of the field, never a UnicodeDecodeError."""
    try:
        return raw.decode(codec, _errors_for(codec))
    except UnicodeDecodeError as exc:
        raise CorruptError(f"{len(raw)} bytes are not {encoding} text ({exc.reason} at byte "
                           f"{exc.start})", offset=offset, path=path) from None


def decode_str(data: Buffer, encoding: str, path: str | None = None,
               offset: int | None = None) -> str:
    codec = _CODECS[encoding]
    return _decode(bytes(data), codec, encoding, path, offset)


def encode_str(value: str, encoding: str) -> bytes:
    codec = _CODECS[encoding]
    return value.encode(codec, _errors_for(codec))


def decode_strz(data: Buffer, encoding: str, path: str | None = None,
                offset: int | None = None) -> str:
    """Decode up to the first NUL terminator (a 2-byte one for UTF-16)."""
    raw = bytes(data)
    codec = _CODECS[encoding]
    unit = 2 if codec.startswith("utf-16") else 1
    for i in range(0, len(raw) - unit + 1, unit):
        if raw[i : i + unit] == bytes(unit):
            raw = raw[:i]
            break
    return _decode(raw, codec, encoding, path, offset)


def strz_bytes(value: str, raw: bytes | None, encoding: str, size: int, path: str) -> bytes:
    """A fixed-size NUL-terminated string field: its parsed bytes while the text is unchanged
    (so bytes after the terminator survive a round trip), else the text NUL-padded."""
    if raw is not None and len(raw) == size and decode_strz(raw, encoding) == value:
        return raw
    return padded(encode_str(value, encoding), size, path)


def fixed_bytes(value: bytes, size: int, path: str) -> bytes:
    """Check a byte field's length before it is written."""
    if len(value) != size:
        raise BuildError(f"{path}: expected {size} bytes, got {len(value)}")
    return value


def padded(value: bytes, size: int, path: str) -> bytes:
    """Pad an encoded string with NULs to its field size."""
    if len(value) > size:
        raise BuildError(f"{path}: {len(value)} bytes do not fit in {size}")
    return value + bytes(size - len(value))


def check_contents(buf: Buffer, offset: int, expected: bytes, path: str) -> bytes:
    need(buf, offset, len(expected), path)
    got = bytes(buf[offset : offset + len(expected)])
    if got != expected:
        raise ValidationError(f"expected {expected!r}, got {got!r}", offset=offset, path=path)
    return got


def invalid(path: str, offset: int, value: object, rule: str) -> ValidationError:
    return ValidationError(f"value {value!r} breaks rule {rule}", offset=offset, path=path)


def bits_fit(value: int, width: int, path: str) -> int:
    """Check that a bit field's value fits its width before it is packed."""
    if not 0 <= value < (1 << width):
        raise BuildError(f"{path}: {value} does not fit in {width} bits")
    return value


def int_list_array(values: tuple[int, ...] | list[int], width: int, signed: bool) -> array[int]:
    return array(_ARRAY_CODES[(width, signed)], values)
