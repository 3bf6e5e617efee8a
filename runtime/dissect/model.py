"""The dissection tree: nodes (structures, regions, gaps), their fields and verdicts.

Every offset is an absolute file offset. Values are plain JSON types (int, str, bool, None)
so the object tree and the JSON document (SCHEMA.md) say exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Value = int | str | bool | None
Row = tuple[Value, ...]


@dataclass
class Field:
    """One field of a structure, as its generated field table describes it."""

    name: str
    offset: int  # absolute file offset of the field's first byte
    size: int  # bytes; a bit field gives the bytes of its group
    value: Value
    meaning: str | None = None  # enum name, GUID text, decoded text, flag names...
    doc: str = ""
    bits: tuple[int, int] | None = None  # (shift, width) inside the group, for bit fields

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "offset": self.offset, "size": self.size, "value": self.value,
            "meaning": self.meaning, "doc": self.doc,
            "bits": list(self.bits) if self.bits is not None else None,
        }


@dataclass
class Verdict:
    """A check on a structure: a checksum (stored vs computed), a signature, a rule."""

    name: str  # "checksum", "signature", ...
    ok: bool
    algorithm: str | None = None  # "crc32c", "ones-complement-sum", None for non-checksums
    stored: int | None = None
    computed: int | None = None
    offset: int | None = None  # absolute offset of the stored value
    covers: tuple[int, int] | None = None  # (offset, size) of the bytes the check covers
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ok": self.ok, "algorithm": self.algorithm,
            "stored": self.stored, "computed": self.computed, "offset": self.offset,
            "covers": list(self.covers) if self.covers is not None else None,
            "detail": self.detail,
        }


@dataclass
class Table:
    """Rows computed on demand (a BAT of millions of entries is not a million objects)."""

    columns: tuple[str, ...]
    count: int
    row: Callable[[int], Row] = field(repr=False, compare=False)

    def __iter__(self) -> Iterator[Row]:
        for i in range(self.count):
            yield self.row(i)

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        return {"columns": list(self.columns), "count": self.count,
                "rows": [list(r) for r in self] if rows else None}


@dataclass
class Node:
    """A structure, region, run of blocks or gap of the file, with what is inside it."""

    name: str  # unique among its siblings; paths join names with "/"
    offset: int
    size: int
    kind: str  # the spec's type id for generated structures, else see SCHEMA.md
    summary: str = ""
    fields: list[Field] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    table: Table | None = None
    #: for tables of equal entries (BATs): (entry size, label of entry i from its bytes),
    #: used by hex dumps to mark entry boundaries; not part of the JSON
    entry_format: tuple[int, Callable[[int, bytes], str]] | None = field(
        default=None, repr=False, compare=False)
    _names: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def add(self, child: Node) -> Node:
        """Append a child; a name already used among the children gets a "#2" suffix."""
        names = self._names  # name -> the last suffix number given to it
        if len(names) < len(self.children):  # children were changed directly
            names.clear()
            names.update((c.name, 1) for c in self.children)
        if child.name in names:
            base, n = child.name, names[child.name] + 1
            while f"{base}#{n}" in names:
                n += 1
            names[base] = n
            child.name = f"{base}#{n}"
        names[child.name] = 1
        self.children.append(child)
        return child

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def value(self, name: str) -> Value:
        f = self.field(name)
        return None if f is None else f.value

    def verdict(self, name: str) -> Verdict | None:
        for v in self.verdicts:
            if v.name == name:
                return v
        return None

    def walk(self, path: str = "") -> Iterator[tuple[str, Node]]:
        """(path, node) for this node and every descendant, depth first, in file order."""
        here = f"{path}/{self.name}" if path else self.name
        yield here, self
        for child in self.children:
            yield from child.walk(here)

    def find(self, name: str) -> Node | None:
        """A descendant by path ("metadata/file_parameters") or by a unique name or path
        suffix ("header1", "entry[0]" when only one node has that name)."""
        hits = []
        for path, node in self.walk():
            rel = path.split("/", 1)[1] if "/" in path else ""
            if rel == name:
                return node
            if rel.endswith("/" + name):
                hits.append(node)
        return hits[0] if len(hits) == 1 else None

    def all_damage(self) -> list[tuple[str, Node, str]]:
        """(path, node, message) for every damage note in the tree."""
        return [(p, n, d) for p, n in self.walk() for d in n.damage]

    def sort(self) -> None:
        """Put children (recursively) in file order."""
        self.children.sort(key=lambda n: (n.offset, -n.size))
        for child in self.children:
            child.sort()

    def to_dict(self, path: str = "", table_rows: bool = True) -> dict[str, Any]:
        here = f"{path}/{self.name}" if path else self.name
        return {
            "name": self.name, "path": here, "kind": self.kind, "offset": self.offset,
            "size": self.size, "summary": self.summary,
            "fields": [f.to_dict() for f in self.fields],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "notes": list(self.notes), "damage": list(self.damage),
            "table": self.table.to_dict(table_rows) if self.table is not None else None,
            "children": [c.to_dict(here, table_rows) for c in self.children],
        }
