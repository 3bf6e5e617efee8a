"""The intermediate representation both backends read (Python codecs, construct Structs).

The loader (`loader.py`) turns a .ksy into these objects after validating it; nothing here
knows about YAML or about any backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .expr import Node

Kind = Literal["int", "float", "bits", "bytes", "str", "strz", "struct"]


@dataclass(slots=True)
class EnumDef:
    path: tuple[str, ...]  # ksy path: enclosing type names + enum id
    values: dict[int, str]
    doc: str = ""


@dataclass(slots=True)
class Valid:
    eq: Node | None = None
    any_of: list[Node] | None = None
    min: Node | None = None
    max: Node | None = None
    expr: Node | None = None


@dataclass(slots=True)
class Attribute:
    """A seq field or a pos instance: how to read one value (or a list of them)."""

    id: str
    kind: Kind
    line: int
    doc: str = ""
    doc_ref: str = ""
    orig_id: str | None = None
    # int / float / bits
    width: int = 0  # bytes for int/float; bits for bits
    signed: bool = False
    big: bool = True  # byte order (int/float) or bit order (bits)
    # bytes / str / strz / struct-in-substream
    size: Node | None = None
    size_eos: bool = False
    contents: bytes | None = None
    encoding: str | None = None
    # struct
    type_path: tuple[str, ...] | None = None  # resolved path of the user type
    args: list[Node] = field(default_factory=list)
    # modifiers
    enum: tuple[str, ...] | None = None  # resolved enum path
    repeat: Literal["expr", "eos"] | None = None
    repeat_expr: Node | None = None
    cond: Node | None = None  # `if`
    valid: Valid | None = None
    # the value new() gives an integer field: `-default`, else the one its `valid` fixes
    default: int | None = None


@dataclass(slots=True)
class Instance:
    id: str
    line: int
    doc: str = ""
    value: Node | None = None  # value instance
    pos: Node | None = None  # pos instance: read `attr` at this position of the stream
    attr: Attribute | None = None


@dataclass(slots=True)
class Param:
    id: str
    ptype: str  # "int", "bool", "bytes", "str"
    doc: str = ""


@dataclass(slots=True)
class Checksum:
    algorithm: str
    field: str
    covers: Node | None  # None = the structure's own size


@dataclass(slots=True)
class TypeDef:
    path: tuple[str, ...]  # () for the top-level type
    name: str  # ksy id (meta.id for the top level)
    line: int
    doc: str = ""
    doc_ref: str = ""
    orig_id: str | None = None
    big: bool = True
    bit_big: bool = True
    params: list[Param] = field(default_factory=list)
    seq: list[Attribute] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    checksum: Checksum | None = None


@dataclass(slots=True)
class Spec:
    id: str
    title: str
    source: str  # path of the .ksy as given
    sha256: str
    doc: str
    doc_ref: str
    meta: dict[str, object]
    types: dict[tuple[str, ...], TypeDef]  # every type, top level at ()
    enums: dict[tuple[str, ...], EnumDef]

    @property
    def root(self) -> TypeDef:
        return self.types[()]
