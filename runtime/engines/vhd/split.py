"""Legacy split VHDs (vhd-split-and-locators.md A): name.vhd, name.v01, name.v02, ..."""

from __future__ import annotations

from pathlib import Path

from ...errors import CorruptError

MAX_PIECES = 64


def split_parts(path: Path) -> list[Path]:
    """The pieces of the logical file that starts at `path` (just [path] when not split)."""
    if path.suffix.lower() != ".vhd":
        return [path]
    upper = path.suffix.isupper()
    parts = [path]
    for k in range(1, MAX_PIECES + 1):
        names = [f".V{k:02d}", f".v{k:02d}"] if upper else [f".v{k:02d}", f".V{k:02d}"]
        found = next((path.with_suffix(s) for s in names if path.with_suffix(s).is_file()), None)
        if found is None:
            later = [path.with_suffix(f".v{j:02d}") for j in range(k + 1, MAX_PIECES + 1)]
            gap = next((p for p in later if p.is_file()), None)
            if gap is not None:
                raise CorruptError(f"split VHD {path}: piece {k:02d} is missing but {gap.name} exists")
            break
        parts.append(found)
    return parts
