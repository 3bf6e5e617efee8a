"""`info` and `check` reports with qemu-img's JSON members (QAPI ImageInfo and ImageCheck).

info: the members qemu-img 7.2 prints, in the order of the QAPI schema (filename, format,
dirty-flag, actual-size, virtual-size, cluster-size, encrypted, compressed,
backing-filename, full-backing-filename, backing-filename-format, snapshots,
format-specific), then what the engine adds beyond qemu (e.g. "warnings").

check: check-errors always; image-end-offset, total-clusters, allocated-clusters,
fragmented-clusters, compressed-clusters, corruptions, leaks, corruptions-fixed and
leaks-fixed only when not zero, like qemu-img; filename and format last. Counts are the
number of problems the engine reports (qemu counts clusters; a VHD check reports ranges).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import CheckResult
from ..errors import CorruptError
from ..extent import State
from ..image import Image
from ..policy import DEFAULT, refusal
from ..util import ceil_div

INFO_ORDER = ["filename", "format", "dirty-flag", "actual-size", "virtual-size", "cluster-size",
              "encrypted", "compressed", "backing-filename", "full-backing-filename",
              "backing-filename-format", "snapshots", "format-specific"]

CHECK_ORDER = ["image-end-offset", "total-clusters", "check-errors", "allocated-clusters",
               "fragmented-clusters", "compressed-clusters", "corruptions", "leaks",
               "corruptions-fixed", "leaks-fixed", "filename", "format"]


def files_of(image: Image) -> list[Path]:
    """The host files holding the image (several for a split VHD)."""
    backend = image.engine.backend
    parts = getattr(backend, "parts", None)
    if isinstance(parts, list):
        return [p.path for p in parts]
    return [backend.path]


def actual_size(image: Image) -> int:
    """Bytes allocated on the host file system (st_blocks), like qemu's `disk size`."""
    total = 0
    for path in files_of(image):
        with contextlib.suppress(OSError):
            total += os.stat(path).st_blocks * 512
    return total


@dataclass
class BackingRef:
    """A backing file as far as it is known without (or after) opening it."""

    name: str  # as the image names it
    full: str | None  # the path it resolves to (None: not found)
    format: str | None


def _stored_name(path: Path, child_dir: Path) -> str:
    """A backing path as qemu shows a stored name: relative to the image's directory when it
    lies there (or was found relative to it), else absolute."""
    if not path.is_absolute() or path.parent == child_dir:
        return os.path.relpath(path, child_dir)
    return str(path)


def backing_ref(image: Image) -> BackingRef | None:
    engine = image.engine
    if not engine.needs_parent:
        return None
    child_dir = image.path.parent
    if image.backing is not None:
        full = image.backing.path
        return BackingRef(_stored_name(full, child_dir), str(full),
                          engine.backing_format or image.backing.format)
    try:
        candidates = engine.parent_candidates()
    except Exception:  # a damaged locator: the image still has a parent, name unknown
        candidates = []
    if not candidates:
        return BackingRef("", None, engine.backing_format)
    # the full name: where the parent would be opened from (nothing is opened here)
    where = next((str(c) for _, c in candidates if refusal(image.path, c, DEFAULT) is None), None)
    return BackingRef(_stored_name(candidates[0][1], child_dir), where, engine.backing_format)


def info(image: Image, filename: str | None = None) -> dict[str, Any]:
    """qemu-img info's members for one image (not its backing chain)."""
    engine = image.engine
    extra = dict(engine.info())
    out: dict[str, Any] = {
        "filename": filename if filename is not None else str(image.path),
        "format": engine.format_name,
        "dirty-flag": bool(extra.pop("dirty-flag", False)),
        "actual-size": actual_size(image),
        "virtual-size": image.size,
    }
    extra.pop("format", None)
    extra.pop("virtual-size", None)
    ref = backing_ref(image)
    if ref is not None:
        if ref.name:
            out["backing-filename"] = ref.name
        if ref.full is not None:
            out["full-backing-filename"] = ref.full
        if ref.format is not None:
            out["backing-filename-format"] = ref.format
    for key in INFO_ORDER:
        if key in extra:
            out[key] = extra.pop(key)
    ordered = {k: out[k] for k in INFO_ORDER if k in out}
    ordered.update(extra)
    return ordered


def chain_info(image: Image, filename: str | None = None) -> list[dict[str, Any]]:
    """info for the image and every backing file below it (top first)."""
    out = []
    for depth, layer in enumerate(image.chain()):
        out.append(info(layer, filename if depth == 0 else None))
    return out


@dataclass
class CheckReport:
    """A check in qemu-img's terms, plus the engine's messages."""

    result: CheckResult
    fixed: CheckResult | None = None  # the first pass of a repair (what was found then)
    members: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        r = self.result
        if r.check_errors:
            return 1
        if r.corruptions:
            return 2
        if r.leaks:
            return 3
        return 0


def check(image: Image, repair: str | None, filename: str | None = None) -> CheckReport:
    """Check (and with repair "leaks"/"all", repair, then check again) like qemu-img check.

    The engine's repair cannot be limited to leaks; with "leaks" it runs only when the first
    pass finds no corruption (so nothing beyond leaks is ever changed).
    """
    engine = image.engine
    first = engine.check(repair=False)
    fixed: CheckResult | None = None
    result = first
    if repair is not None and (first.corruptions or first.leaks) and \
            (repair == "all" or not first.corruptions):
        fixed = engine.check(repair=True)
        result = engine.check(repair=False)
    members: dict[str, Any] = {"check-errors": len(result.check_errors)}
    members.update(_clusters(image))
    if result.corruptions:
        members["corruptions"] = len(result.corruptions)
    if result.leaks:
        members["leaks"] = len(result.leaks)
    if fixed is not None:
        c_fixed = max(0, len(fixed.corruptions) - len(result.corruptions))
        l_fixed = max(0, len(fixed.leaks) - len(result.leaks))
        if c_fixed:
            members["corruptions-fixed"] = c_fixed
        if l_fixed:
            members["leaks-fixed"] = l_fixed
    members["filename"] = filename if filename is not None else str(image.path)
    members["format"] = engine.format_name
    ordered = {k: members[k] for k in CHECK_ORDER if k in members}
    return CheckReport(result, fixed, ordered)


def _clusters(image: Image) -> dict[str, int]:
    """image-end-offset and, for images with clusters (blocks), how many are allocated."""
    out: dict[str, int] = {}
    files = files_of(image)
    with contextlib.suppress(OSError):
        out["image-end-offset"] = sum(os.stat(p).st_size for p in files)
    cluster = image.engine.info().get("cluster-size")
    if isinstance(cluster, int) and cluster > 0 and image.size > 0:
        total = ceil_div(image.size, cluster)
        allocated: set[int] = set()
        # a mapping damaged beyond use (the engine's check reports it) ends the count early
        with contextlib.suppress(CorruptError):
            for e in image.extents():
                if e.state is State.DATA:
                    allocated.update(range(e.offset // cluster, ceil_div(e.end, cluster)))
        out["total-clusters"] = total
        if allocated:
            out["allocated-clusters"] = len(allocated)
    return out
