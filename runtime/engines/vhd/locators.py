"""Parent locators of differencing VHDs: decode them into candidate paths, build new ones."""

from __future__ import annotations

import ntpath
import os
import posixpath
import urllib.parse
from pathlib import Path

from diskspec.formats import vhd

P = vhd.PlatformCode

#: the order candidates are tried in: relative first, so a moved pair still opens
PREFERENCE = [P.W2RU, P.MACX, P.W2KU, P.WI2R, P.WI2K]

#: a locator larger than this is not a path (bounded allocation for hostile images)
MAX_LOCATOR = 64 * 1024


def reserved_bytes(entry: vhd.ParentLocator) -> int | None:
    """Bytes reserved for the locator data: sectors per the specification, bytes in practice."""
    space = entry.platform_data_space
    if space < 512:
        return space * 512
    return space if space % 512 == 0 else None


def decode(code: int, data: bytes) -> str | None:
    """The path text of one locator, or None when it is not a path (Mac alias) or garbled."""
    try:
        if code in (P.W2RU, P.W2KU):
            text = data.decode("utf-16-le")
        elif code in (P.WI2R, P.WI2K):
            text = data.decode("latin-1")
        elif code == P.MACX:
            text = data.decode("utf-8")
            if not text.startswith("file://"):
                return None
            text = urllib.parse.unquote(text[len("file://"):])
            if text.startswith("localhost/"):
                text = text[len("localhost"):]
        else:
            return None
    except UnicodeDecodeError:
        return None
    return text.rstrip("\0") or None


def to_host_path(text: str, code: int, child_dir: Path) -> list[Path]:
    """Candidate host paths for a locator's text (Windows paths use \\ and drive letters)."""
    if code == P.MACX:
        return [Path(text)]
    relative = code in (P.W2RU, P.WI2R)
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if relative:
        return [child_dir.joinpath(*parts)] if parts else []
    drive, rest = ntpath.splitdrive(text)
    rest_parts = [p for p in rest.replace("\\", "/").split("/") if p]
    out = []
    if not drive and text.startswith("/"):
        out.append(Path("/").joinpath(*rest_parts))
    if rest_parts:  # on a non-Windows host the drive is meaningless: try by name nearby
        out.append(child_dir / rest_parts[-1])
    return out


def parent_name(header: vhd.DynamicHeader) -> str:
    """The header's parent name: UTF-16BE, NUL padded (a BOM is honoured if present)."""
    name = header.parent_unicode_name
    if name.startswith("\ufeff"):
        name = name[1:]
    elif name.startswith("\ufffe"):
        raw = name.encode("utf-16-be", "surrogatepass")[2:]
        name = raw.decode("utf-16-le", "replace")
    return name.split("\0", 1)[0]


def encode_windows(path: str, relative: bool) -> bytes:
    """W2ru / W2ku data: UTF-16LE Windows path (relative ones start with .\\)."""
    text = path.replace("/", "\\")
    if relative and not text.startswith(".\\"):
        text = ".\\" + text
    return text.encode("utf-16-le")


def relative_to(parent: Path, child_dir: Path) -> str:
    return posixpath.normpath(os.path.relpath(parent.resolve(), child_dir.resolve()))
