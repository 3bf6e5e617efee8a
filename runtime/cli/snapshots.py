"""Naming an internal snapshot on the command line, as qemu-img's `convert -l` does:
`-l ID_OR_NAME` (the snapshot with that ID, else the one with that name) or
`-l snapshot.id=ID[,snapshot.name=NAME]` (every key given must match). The same text goes to
`--snapshot` of info, map, compare and dissect. A snapshot opens read-only as an image of its
own, of the size its table entry records."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import Snapshot
from ..errors import DiskspecError
from ..image import Image

PREFIX = "snapshot."
KEYS = ("snapshot.id", "snapshot.name")


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot as the user named it."""

    text: str
    id: str | None = None
    name: str | None = None
    id_or_name: str | None = None

    def find(self, snapshots: list[Snapshot]) -> Snapshot | None:
        if self.id_or_name is not None:  # qemu: by ID first, then by name
            return next((s for s in snapshots if s.id == self.id_or_name),
                        next((s for s in snapshots if s.name == self.id_or_name), None))
        return next((s for s in snapshots if (self.id is None or s.id == self.id)
                     and (self.name is None or s.name == self.name)), None)


def parse(text: str) -> SnapshotRef:
    """`-l`'s argument, with qemu-img's messages for a bad one."""
    if not text.startswith(PREFIX):
        return SnapshotRef(text, id_or_name=text)
    values: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if key not in KEYS:
            raise DiskspecError(f"Failed in parsing snapshot param '{text}': "
                                f"Invalid parameter '{key}'")
        values[key] = value if eq else "on"  # qemu's (deprecated) short-form boolean
    return SnapshotRef(text, id=values.get("snapshot.id"), name=values.get("snapshot.name"))


def snapshot_id(image: Image, ref: SnapshotRef) -> str:
    """The ID of the snapshot `ref` names in `image`, or qemu-img's error."""
    if not image.engine.capabilities.snapshots:
        raise DiskspecError(f"Failed to load snapshot: Block format '{image.format}' used by "
                            "device '' does not support temporarily loading internal snapshots")
    found = ref.find(image.engine.snapshots())
    if found is None:
        raise DiskspecError("Failed to load snapshot: Can't find snapshot")
    return found.id
