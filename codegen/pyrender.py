"""Backend 1: render the IR as a typed Python module (through the jinja2 templates).

Per type this computes a plan -- field declarations, the field table and method bodies as
lines of Python -- and `templates/module.py.j2` lays the plans out. Flat fixed-size types
(ints, bit groups, fixed byte arrays and strings, nested flat types) get a fast path: one
precompiled `struct.Struct` for parse and for build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .expr import Attr, Name, Node, const_int, names_used, to_python, walk
from .ir import Attribute, EnumDef, Spec, TypeDef
from .loader import SpecError

TEMPLATES = Path(__file__).with_name("templates")

_INT_CODES = {(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
              (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q"}
_FLOAT_CODES = {4: "f", 8: "d"}


def _parenthesized(src: str) -> str:
    """`src` wrapped in parentheses unless it already is (as a whole) or is a plain name."""
    if re.fullmatch(r"[\w.]+", src):
        return src
    if src.startswith("(") and src.endswith(")"):
        depth = 0
        for i, ch in enumerate(src):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and i < len(src) - 1:
                break
        else:
            return src
    return f"({src})"


def ceil_bytes(bits: int) -> int:
    return (bits + 7) // 8


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


@dataclass
class Column:
    """One dataclass field of a generated class."""

    name: str
    annotation: str
    default: str  # Python source of the default used by new()


@dataclass
class Private:
    """A slot that is not a field of the record: set by parse, left out of init, repr and ==."""

    name: str
    annotation: str
    default: str


@dataclass
class TypePlan:
    tdef: TypeDef
    class_name: str
    doc: str
    columns: list[Column] = field(default_factory=list)
    size: int | None = None
    field_rows: list[str] = field(default_factory=list)
    methods: list[list[str]] = field(default_factory=list)  # each a method's source lines
    ctx_slots: bool = False
    io_slots: bool = False
    raw_slots: list[str] = field(default_factory=list)  # strz fields that keep their raw bytes
    struct_def: str | None = None  # module-level Struct for the fast path

    @property
    def names(self) -> tuple[str, ...]:
        """The fields of the record: in __init__, repr and ==."""
        return tuple(c.name for c in self.columns)

    @property
    def private(self) -> list[Private]:
        slots = []
        if self.ctx_slots:
            slots += [Private("_parent", "Any", "None"), Private("_root", "Any", "None")]
        slots += [Private(f"_raw_{r}", "bytes | None", "None") for r in self.raw_slots]
        if self.io_slots:
            slots += [Private("_io_buf", "Any", "None"), Private("_io_base", "int", "0"),
                      Private("_io_end", "int", "0")]
        return slots


@dataclass
class _Bits:
    """A run of consecutive bit fields read as one integer."""

    attrs: list[Attribute]
    nbytes: int
    big: bool

    def shifts(self) -> list[int]:
        """Right-shift of each field inside the group's integer."""
        total = self.nbytes * 8
        out, used = [], 0
        for a in self.attrs:
            out.append(total - used - a.width if self.big else used)
            used += a.width
        return out


class Renderer:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.class_names: dict[tuple[str, ...], str] = {}
        self.enum_names: dict[tuple[str, ...], str] = {}
        self.structs: dict[str, str] = {}  # module-level Struct name -> format
        self.sizes: dict[tuple[str, ...], int | None] = {}
        self.flat: dict[tuple[str, ...], bool] = {}
        #: the spec reads _parent/_root somewhere: every decoded record keeps its context (a
        #: chain like _parent._parent passes through types that do not use it themselves)
        self.spec_ctx = any(self.uses(t, {"_parent", "_root"}) for t in spec.types.values())
        self.run_structs: dict[tuple[tuple[str, ...], str], str] = {}  # run's first field -> Struct
        self.name_types()

    # -- naming -----------------------------------------------------------------------------

    def err(self, tdef: TypeDef, message: str, line: int | None = None) -> SpecError:
        path = "/".join(f"types/{p}" for p in tdef.path) or "/"
        return SpecError(f"{self.spec.source}:{line or tdef.line}: {path}: {message}")

    def name_types(self) -> None:
        taken: dict[str, str] = {}
        for tpath in self.spec.types:
            name = camel(self.spec.id) if not tpath else "".join(camel(p) for p in tpath)
            self.claim(taken, name, "type " + "::".join(tpath or (self.spec.id,)))
            self.class_names[tpath] = name
        for epath in self.spec.enums:
            name = "".join(camel(p) for p in epath)
            self.claim(taken, name, "enum " + "::".join(epath))
            self.enum_names[epath] = name

    def claim(self, taken: dict[str, str], name: str, what: str) -> None:
        if name in taken:
            raise SpecError(f"{self.spec.source}:1: /: {what} and {taken[name]} both become "
                            f"Python name {name!r}; rename one")
        taken[name] = what

    def enum_ref(self, scope: tuple[str, ...]) -> object:
        def find(path: tuple[str, ...]) -> str:
            for depth in range(len(scope), -1, -1):
                cand = (*scope[:depth], *path)
                if cand in self.enum_names:
                    return self.enum_names[cand]
            raise SpecError(f"{self.spec.source}:1: /: unknown enum {'::'.join(path)}")
        return find

    # -- expressions ------------------------------------------------------------------------

    def py(self, node: Node, tdef: TypeDef, underscore: str = "_v", prop: bool = False,
           depth: int = 0) -> str:
        """Python for an expression of `tdef`: while parsing (locals pos, io_base, io_end;
        value instances inlined so `_io.pos` means the current position) or, with `prop`,
        inside a property of the decoded record."""
        optional = {a.id for a in tdef.seq if a.cond is not None}
        values = {i.id: i.value for i in tdef.instances if i.value is not None}

        def resolve(n: Name) -> str:
            if n.name == "_io.size":
                return "(io_end - io_base)"
            if n.name == "_io.pos":
                if prop:
                    raise self.err(tdef, "_io.pos has no meaning once the record is decoded "
                                         "(used in a value instance read outside the seq)")
                return "(pos - io_base)"
            if not prop and n.name in values and depth < 16:
                inner = values[n.name]
                assert inner is not None
                return _parenthesized(self.py(inner, tdef, underscore, prop, depth + 1))
            if n.name.startswith("_io."):
                raise self.err(tdef, f"_io.{n.name[4:]} is not supported")
            if n.name == "_io":
                raise self.err(tdef, "_io can only be used as _io.size or _io.pos")
            if n.name == "_index":
                return "_i"
            if n.name == "_":
                return underscore
            if n.name in optional:  # a conditional field read by an expression must be there
                return f"_codec.present(self.{n.name}, {self.dotted(tdef) + '.' + n.name!r})"
            return f"self.{n.name}"

        def is_member(n: Attr) -> bool:
            owner = self.static_type(n.obj, tdef)
            return owner is not None and n.name in self.member_names(owner)

        return to_python(node, resolve, self.enum_ref(tdef.path), is_member)  # type: ignore[arg-type]

    def member_names(self, tpath: tuple[str, ...]) -> set[str]:
        t = self.spec.types[tpath]
        return {a.id for a in t.seq} | {i.id for i in t.instances} | {p.id for p in t.params}

    def static_type(self, node: Node, tdef: TypeDef) -> tuple[str, ...] | None:
        """The user type an expression evaluates to, where that is known statically."""
        if isinstance(node, Name):
            if node.name == "_root":
                return ()
            attrs = list(tdef.seq) + [i.attr for i in tdef.instances if i.attr is not None
                                       and i.id == node.name]
            found = next((a for a in attrs if a.id == node.name and a.repeat is None), None)
            return found.type_path if found is not None and found.kind == "struct" else None
        if isinstance(node, Attr):
            owner = self.static_type(node.obj, tdef)
            if owner is None:
                return None
            return self.static_type(Name(node.name), self.spec.types[owner])
        return None

    def uses(self, tdef: TypeDef, names: set[str]) -> bool:
        return any(names_used(node) & names for node in self.exprs(tdef))

    def exprs(self, tdef: TypeDef) -> list[Node]:
        out: list[Node] = []
        attrs = list(tdef.seq) + [i.attr for i in tdef.instances if i.attr is not None]
        for a in attrs:
            out += [n for n in (a.size, a.repeat_expr, a.cond) if n is not None]
            out += a.args
            if a.valid is not None:
                v = a.valid
                out += [n for n in (v.eq, v.min, v.max, v.expr) if n is not None]
                out += v.any_of or []
        out += [i.value for i in tdef.instances if i.value is not None]
        out += [i.pos for i in tdef.instances if i.pos is not None]
        if tdef.checksum is not None and tdef.checksum.covers is not None:
            out.append(tdef.checksum.covers)
        return out

    # -- sizes and flatness -----------------------------------------------------------------

    def attr_size(self, a: Attribute) -> int | None:
        if a.cond is not None or a.repeat == "eos" or a.size_eos:
            return None
        if a.kind in ("int", "float"):
            one: int | None = a.width
        elif a.kind == "bits":
            return None  # counted per group
        elif a.contents is not None:
            one = len(a.contents)
        elif a.size is not None:
            one = const_int(a.size)
        elif a.kind == "struct":
            assert a.type_path is not None
            one = self.type_size(a.type_path)
        else:
            one = None
        if one is None:
            return None
        if a.repeat == "expr":
            assert a.repeat_expr is not None
            count = const_int(a.repeat_expr)
            return None if count is None else one * count
        return one

    def groups(self, tdef: TypeDef) -> list[Attribute | _Bits]:
        out: list[Attribute | _Bits] = []
        run: list[Attribute] = []
        for a in tdef.seq:
            if a.kind == "bits":
                run.append(a)
                if sum(b.width for b in run) % 8 == 0:
                    out.append(_Bits(run, sum(b.width for b in run) // 8, run[0].big))
                    run = []
                continue
            out.append(a)
        return out

    def type_size(self, tpath: tuple[str, ...]) -> int | None:
        if tpath in self.sizes:
            return self.sizes[tpath]
        self.sizes[tpath] = None  # recursion guard
        tdef = self.spec.types[tpath]
        total: int | None = 0
        for g in self.groups(tdef):
            n = g.nbytes if isinstance(g, _Bits) else self.attr_size(g)
            if n is None or total is None:
                total = None
                break
            total += n
        self.sizes[tpath] = total
        return total

    def is_flat(self, tpath: tuple[str, ...]) -> bool:
        if tpath in self.flat:
            return self.flat[tpath]
        self.flat[tpath] = False
        tdef = self.spec.types[tpath]
        ok = self.type_size(tpath) is not None and not tdef.params
        ok = ok and not (self.spec_ctx and any(a.kind == "struct" for a in tdef.seq))
        ok = ok and not any(i.pos is not None for i in tdef.instances)
        special = {"_parent", "_root", "_io", "_io.size", "_io.pos", "_index"}
        ok = ok and not self.uses(tdef, special) and len(self.byte_orders(tpath)) <= 1
        for g in self.groups(tdef) if ok else []:
            if isinstance(g, _Bits):
                ok = ok and g.nbytes in (1, 2, 4, 8)
                continue
            a = g
            if a.kind == "strz" or a.cond is not None or a.repeat is not None and a.kind != "struct":
                ok = False
            elif a.kind == "struct":
                assert a.type_path is not None
                sub_size = self.type_size(a.type_path)
                ok = ok and not a.args and self.is_flat(a.type_path)
                ok = ok and (a.size is None or const_int(a.size) == sub_size)
        self.flat[tpath] = ok
        return ok

    # -- annotations and defaults -----------------------------------------------------------

    def one_annotation(self, a: Attribute) -> str:
        if a.kind in ("int", "bits"):
            if a.enum is not None:
                return f"{self.enum_names[a.enum]} | int"
            return "int"
        if a.kind == "float":
            return "float"
        if a.kind in ("str", "strz"):
            return "str"
        if a.kind == "struct":
            assert a.type_path is not None
            return self.class_names[a.type_path]
        return "bytes"

    def is_int_array(self, a: Attribute) -> bool:
        return a.repeat is not None and a.kind == "int" and a.enum is None and a.valid is None

    def annotation(self, a: Attribute) -> str:
        one = self.one_annotation(a)
        if self.is_int_array(a):
            ann = "array[int]"
        elif a.repeat is not None:
            ann = f"list[{one}]"
        else:
            ann = one
        return f"{ann} | None" if a.cond is not None else ann

    def default(self, a: Attribute) -> str:
        if a.cond is not None:
            return "None"
        count = const_int(a.repeat_expr) if a.repeat == "expr" and a.repeat_expr else None
        if self.is_int_array(a):
            code = _INT_CODES[(a.width, a.signed)]
            return f"array({code!r}, bytes({count * a.width}))" if count else f"array({code!r})"
        one = self.one_default(a)
        if a.repeat is not None:
            return f"[{one} for _ in range({count})]" if count else "[]"
        return one

    def one_default(self, a: Attribute) -> str:
        if a.kind in ("int", "bits"):
            value = a.default or 0
            if a.enum is not None:
                return f"_codec.enum_or_int({self.map_name(a.enum)}, {value})"
            return f"{value:#x}" if value > 9 else str(value)
        if a.kind == "float":
            return "0.0"
        if a.kind in ("str", "strz"):
            return "''"
        if a.contents is not None:
            return repr(a.contents)
        if a.kind == "struct":
            assert a.type_path is not None
            sub = self.spec.types[a.type_path]
            if sub.params:
                return "None"  # must be given
            return f"{self.class_names[a.type_path]}.new()"
        n = const_int(a.size) if a.size is not None else None
        return f"bytes({n})" if n else "b''"

    def map_name(self, epath: tuple[str, ...]) -> str:
        return f"_{self.enum_names[epath].upper()}_BY_VALUE"

    # -- plans ------------------------------------------------------------------------------

    def plan(self, tdef: TypeDef) -> TypePlan:
        name = self.class_names[tdef.path]
        doc = tdef.doc.strip() or f"The `{'::'.join(tdef.path) or self.spec.id}` structure."
        plan = TypePlan(tdef=tdef, class_name=name, doc=doc, size=self.type_size(tdef.path))
        plan.ctx_slots = self.spec_ctx and not self.is_flat(tdef.path)
        plan.io_slots = any(i.pos is not None for i in tdef.instances) or any(
            names_used(i.value) & {"_io", "_io.size", "_io.pos"}
            for i in tdef.instances if i.value is not None)
        for p in tdef.params:
            ann = {"int": "int", "bool": "bool", "bytes": "bytes", "str": "str"}[p.ptype]
            plan.columns.append(Column(p.id, ann, {"int": "0", "bool": "False", "bytes": "b''",
                                                   "str": "''"}[p.ptype]))
        for a in tdef.seq:
            plan.columns.append(Column(a.id, self.annotation(a), self.default(a)))
        plan.raw_slots = [a.id for a in tdef.seq
                          if a.kind == "strz" and a.repeat is None and a.size is not None]
        plan.field_rows = self.field_rows(tdef)
        plan.methods.append(self.init_method(plan))
        flat = self.is_flat(tdef.path)
        if flat:
            plan.struct_def = self.flat_struct(tdef)
            plan.methods.append(self.fast_parse(tdef, plan))
            plan.methods.append(self.fast_internal_parse(tdef, plan))
            plan.methods.append(self.fast_build(tdef, plan))
            if self.has_rules(tdef.path):
                plan.methods.append(self.check_method(tdef))
        else:
            plan.methods.append(self.public_parse(tdef, plan))
            plan.methods.append(self.general_parse(tdef, plan))
            plan.methods.append(self.public_build(tdef))
        plan.methods.append(self.general_build(tdef))
        plan.methods.append(self.new_method(tdef, plan))
        for inst in tdef.instances:
            plan.methods.append(self.instance_property(tdef, plan, inst))
        if tdef.checksum is not None:
            plan.methods += self.checksum_methods(tdef, plan)
        return plan

    def field_rows(self, tdef: TypeDef) -> list[str]:
        rows: list[str] = []
        offset: int | None = 0
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                used = 0
                for a, shift in zip(g.attrs, g.shifts(), strict=True):
                    rows.append(self.row(a, offset, g.nbytes, bits=(shift, a.width)))
                    used += a.width
                offset = None if offset is None else offset + g.nbytes
                continue
            size = self.attr_size(g)
            rows.append(self.row(g, offset, size))
            offset = None if offset is None or size is None else offset + size
        return rows

    def row(self, a: Attribute, offset: int | None, size: int | None,
            bits: tuple[int, int] | None = None) -> str:
        enum = "::".join(a.enum) if a.enum else None
        doc = " ".join(a.doc.split())
        rule = "; ".join(text for _, text in self.valid_rules(a, "_")) if a.valid else None
        return (f"_codec.FieldInfo({a.id!r}, {offset!r}, {size!r}, {doc!r}, "
                f"{a.orig_id!r}, {enum!r}, {bits!r}, {a.contents!r}, {rule!r})")

    # -- fast path --------------------------------------------------------------------------

    def flat_leaves(self, tdef: TypeDef) -> tuple[str, int]:
        """The struct format of a flat type, and how many tuple items it yields."""
        fmt, count = "", 0
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                fmt += _INT_CODES[(g.nbytes, False)]
                count += 1
                continue
            a = g
            reps = const_int(a.repeat_expr) if a.repeat == "expr" and a.repeat_expr else 1
            assert reps is not None
            for _ in range(reps):
                if a.kind == "struct":
                    assert a.type_path is not None
                    sub_fmt, sub_count = self.flat_leaves(self.spec.types[a.type_path])
                    fmt += sub_fmt
                    count += sub_count
                elif a.kind in ("int",):
                    fmt += _INT_CODES[(a.width, a.signed)]
                    count += 1
                elif a.kind == "float":
                    fmt += _FLOAT_CODES[a.width]
                    count += 1
                else:
                    n = len(a.contents) if a.contents is not None else const_int(a.size)  # type: ignore[arg-type]
                    fmt += f"{n}s"
                    count += 1
        return fmt, count

    def byte_orders(self, tpath: tuple[str, ...]) -> set[bool]:
        tdef = self.spec.types[tpath]
        out: set[bool] = set()
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                if g.nbytes > 1:  # one Struct code reads the group: it needs the bit order
                    out.add(g.big)
            elif g.kind in ("int", "float") and g.width > 1:
                out.add(g.big)
            elif g.kind == "struct" and g.type_path is not None:
                out |= self.byte_orders(g.type_path)
        return out

    def flat_struct(self, tdef: TypeDef) -> str:
        orders = self.byte_orders(tdef.path)
        big = orders.pop() if orders else True
        fmt, _ = self.flat_leaves(tdef)
        name = f"_S_{self.class_names[tdef.path].upper()}"
        self.structs[name] = (">" if big else "<") + fmt
        return name

    def flat_values(self, tdef: TypeDef, start: int, obj_path: str
                    ) -> tuple[list[str], list[str], int]:
        """Constructor arguments from tuple `t` (and checks), starting at item `start`."""
        args: list[str] = []
        checks: list[str] = []
        i = start
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                for a, shift in zip(g.attrs, g.shifts(), strict=True):
                    mask = (1 << a.width) - 1
                    val = f"(t[{i}] >> {shift}) & {mask:#x}" if shift else f"t[{i}] & {mask:#x}"
                    if a.enum is not None:
                        val = f"_codec.enum_or_int({self.map_name(a.enum)}, {val})"
                    args.append(val)
                i += 1
                continue
            a = g
            reps = const_int(a.repeat_expr) if a.repeat == "expr" and a.repeat_expr else None
            items: list[str] = []
            for _ in range(reps or 1):
                if a.kind == "struct":
                    assert a.type_path is not None
                    sub = self.spec.types[a.type_path]
                    sub_args, sub_checks, i = self.flat_values(sub, i, f"{obj_path}.{a.id}")
                    checks += sub_checks
                    items.append(f"{self.class_names[a.type_path]}({', '.join(sub_args)})")
                    continue
                val = f"t[{i}]"
                if a.contents is not None:
                    checks.append(
                        f"if t[{i}] != {a.contents!r}:\n"
                        f"    raise _codec.ValidationError({'expected ' + repr(a.contents) + ', got '!r}"
                        f" + repr(t[{i}]), offset=offset, path={obj_path + '.' + a.id!r})")
                elif a.kind == "str":
                    val = f"_codec.decode_str(t[{i}], {a.encoding!r}, {obj_path + '.' + a.id!r})"
                elif a.enum is not None:
                    val = f"_codec.enum_or_int({self.map_name(a.enum)}, t[{i}])"
                items.append(val)
                i += 1
            args.append(f"[{', '.join(items)}]" if reps is not None else items[0])
        return args, checks, i

    def fast_parse(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        name = plan.class_name
        args, checks, _ = self.flat_values(tdef, 0, self.dotted(tdef))
        lines = [
            "@classmethod",
            f"def parse(cls, buf: _codec.Buffer, offset: int = 0) -> {name}:",
            f'    """Decode from `buf` at `offset` ({plan.size} bytes)."""',
            f"    if offset < 0 or len(buf) - offset < {plan.size}:",
            f"        _codec.need(buf, offset, {plan.size}, {self.dotted(tdef)!r})",
            f"    t = {plan.struct_def}.unpack_from(buf, offset)",
        ]
        for c in checks:
            lines += ["    " + ln for ln in c.splitlines()]
        lines.append("    self = cls(")
        lines += [f"        {arg}," for arg in args]
        lines.append("    )")
        if self.has_rules(tdef.path):
            lines.append("    self._check(offset)")
        lines.append("    return self")
        return lines

    def has_rules(self, tpath: tuple[str, ...]) -> bool:
        """True when a flat type or a record nested in it carries `valid` rules."""
        for a in self.spec.types[tpath].seq:
            if a.valid is not None:
                return True
            if a.kind == "struct" and a.type_path is not None and self.has_rules(a.type_path):
                return True
        return False

    def check_method(self, tdef: TypeDef) -> list[str]:
        """`_check(offset)`: the `valid` rules of a flat type, run on the decoded record."""
        lines = ["def _check(self, offset: int) -> None:"]
        for a, off, _size in self.static_offsets(tdef):
            path = f"{self.dotted(tdef)}.{a.id}"
            if a.valid is not None:
                lines += ["    " + ln for ln in
                          self.valid_checks(tdef, a, f"self.{a.id}", f"offset + {off}", path)]
            if a.kind == "struct" and a.type_path is not None and self.has_rules(a.type_path):
                if a.repeat is None:
                    lines.append(f"    self.{a.id}._check(offset + {off})")
                else:
                    step = self.type_size(a.type_path)
                    lines += [f"    for _k, _item in enumerate(self.{a.id}):",
                              f"        _item._check(offset + {off} + _k * {step})"]
        return lines

    def fast_internal_parse(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        return [
            "@classmethod",
            "def _parse(cls, buf: _codec.Buffer, pos: int, io_base: int, io_end: int,",
            f"           _parent: Any, _root: Any) -> tuple[{plan.class_name}, int]:",
            f"    _codec.need_until(io_end, pos, {plan.size}, {self.dotted(tdef)!r})",
            f"    return cls.parse(buf, pos), pos + {plan.size}",
        ]

    def flat_pack_values(self, tdef: TypeDef, obj: str, path: str) -> tuple[list[str], list[str]]:
        """Values for Struct.pack (and length checks) for a flat type's object `obj`."""
        vals: list[str] = []
        pre: list[str] = []
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                parts = []
                for a, shift in zip(g.attrs, g.shifts(), strict=True):
                    v = f"_codec.bits_fit({obj}.{a.id}, {a.width}, {path + '.' + a.id!r})"
                    parts.append(f"({v} << {shift})" if shift else v)
                vals.append(" | ".join(parts))
                continue
            a = g
            reps = const_int(a.repeat_expr) if a.repeat == "expr" and a.repeat_expr else None
            if reps is not None:
                pre.append(f"if len({obj}.{a.id}) != {reps}:\n"
                           f"    raise _codec.BuildError('{path}.{a.id}: needs {reps} items')")
                for k in range(reps):
                    assert a.type_path is not None
                    sub = self.spec.types[a.type_path]
                    sv, sp = self.flat_pack_values(sub, f"{obj}.{a.id}[{k}]", f"{path}.{a.id}[{k}]")
                    vals += sv
                    pre += sp
                continue
            if a.kind == "struct":
                assert a.type_path is not None
                sv, sp = self.flat_pack_values(self.spec.types[a.type_path], f"{obj}.{a.id}",
                                               f"{path}.{a.id}")
                vals += sv
                pre += sp
            elif a.kind in ("int", "float"):
                vals.append(f"{obj}.{a.id}")
            elif a.kind == "str":
                n = const_int(a.size)  # type: ignore[arg-type]
                vals.append(f"_codec.padded(_codec.encode_str({obj}.{a.id}, {a.encoding!r}), "
                            f"{n}, {path + '.' + a.id!r})")
            else:
                n = len(a.contents) if a.contents is not None else const_int(a.size)  # type: ignore[arg-type]
                vals.append(f"_codec.fixed_bytes({obj}.{a.id}, {n}, {path + '.' + a.id!r})")
        return vals, pre

    def fast_build(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        vals, pre = self.flat_pack_values(tdef, "self", self.dotted(tdef))
        lines = ["def build(self) -> bytes:",
                 f'    """Encode to exactly {plan.size} bytes."""']
        for p in pre:
            lines += ["    " + ln for ln in p.splitlines()]
        lines += ["    try:",
                  f"        return {plan.struct_def}.pack("]
        lines += [f"            {v}," for v in vals]
        lines += ["        )",
                  "    except _struct.error as exc:",
                  f"        raise _codec.BuildError(f'{self.dotted(tdef)}: {{exc}}') from None"]
        return lines

    # -- general path -----------------------------------------------------------------------

    def dotted(self, tdef: TypeDef) -> str:
        return ".".join(tdef.path) or self.spec.id

    def param_sig(self, tdef: TypeDef) -> str:
        return "".join(f", {p.id}: {self.param_ann(p.ptype)}" for p in tdef.params)

    def param_ann(self, ptype: str) -> str:
        return {"int": "int", "bool": "bool", "bytes": "bytes", "str": "str"}[ptype]

    def public_parse(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        sig = "".join(f", {p.id}: {self.param_ann(p.ptype)}" for p in tdef.params)
        star = ", *" if tdef.params else ""
        pass_params = "".join(f", {p.id}" for p in tdef.params)
        return [
            "@classmethod",
            f"def parse(cls, buf: _codec.Buffer, offset: int = 0{star}{sig}) -> {plan.class_name}:",
            '    """Decode from `buf` at `offset`; the stream is all of `buf`."""',
            f"    return cls._parse(buf, offset, 0, len(buf), None, None{pass_params})[0]",
        ]

    def general_parse(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        lines = [
            "@classmethod",
            "def _parse(cls, buf: _codec.Buffer, pos: int, io_base: int, io_end: int,",
            f"           _parent: Any, _root: Any{self.param_sig(tdef)}) -> tuple[{plan.class_name}, int]:",
            "    self = cls.__new__(cls)",
        ]
        if plan.ctx_slots:
            lines += ["    self._parent = _parent",
                      "    self._root = _root if _root is not None else self"]
        if plan.io_slots:
            lines += ["    self._io_buf = buf", "    self._io_base = io_base", "    self._io_end = io_end"]
        root = "self._root" if plan.ctx_slots else "(_root if _root is not None else self)"
        for p in tdef.params:
            lines.append(f"    self.{p.id} = {p.id}")
        for run in self.runs(tdef):
            if isinstance(run, list):
                lines += ["    " + ln for ln in self.read_run(tdef, plan, run)]
            elif isinstance(run, _Bits):
                lines += ["    " + ln for ln in self.read_bits(tdef, run)]
            else:
                lines += ["    " + ln for ln in self.read_attr(tdef, run, f"self.{run.id}", root)]
        lines.append("    return self, pos")
        return lines

    # Consecutive fixed-size fields under the same `if` are read with one precompiled Struct.

    def simple(self, g: Attribute | _Bits) -> bool:
        if isinstance(g, _Bits):
            return g.nbytes in (1, 2, 4, 8)
        if g.repeat is not None or g.kind in ("struct", "strz"):
            return False
        if g.kind in ("int", "float"):
            return True
        return g.contents is not None or (g.size is not None and const_int(g.size) is not None)

    def order_of(self, g: Attribute | _Bits, tdef: TypeDef) -> bool | None:
        if isinstance(g, _Bits):
            return g.big
        return g.big if g.kind in ("int", "float") and g.width > 1 else None

    def runs(self, tdef: TypeDef) -> list[Attribute | _Bits | list[Attribute | _Bits]]:
        out: list[Attribute | _Bits | list[Attribute | _Bits]] = []
        run: list[Attribute | _Bits] = []
        key: tuple[str, bool | None] | None = None
        for g in self.groups(tdef):
            if not self.simple(g):
                if run:
                    out.append(run)
                    run, key = [], None
                out.append(g)
                continue
            cond = "" if isinstance(g, _Bits) or g.cond is None else repr(g.cond)
            if isinstance(g, Attribute) and g.cond is not None:
                used = names_used(g.cond)
                run_ids = {x.id for x in run if isinstance(x, Attribute)} | {
                    a.id for x in run if isinstance(x, _Bits) for a in x.attrs}
                if "_io" in used or used & run_ids:  # must be evaluated right before g
                    if run:
                        out.append(run)
                    out.append([g])
                    run, key = [], None
                    continue
            order = self.order_of(g, tdef)
            if run and key is not None and (cond != key[0] or (
                    order is not None and key[1] is not None and order != key[1])):
                out.append(run)
                run, key = [], None
            run.append(g)
            key = (cond, order if order is not None else (key[1] if key else None))
        if run:
            out.append(run)
        return out

    def read_run(self, tdef: TypeDef, plan: TypePlan, run: list[Attribute | _Bits]) -> list[str]:
        order = next((o for o in (self.order_of(g, tdef) for g in run) if o is not None), True)
        first = run[0].attrs[0].id if isinstance(run[0], _Bits) else run[0].id
        fmt, size, assigns, checks, names = "", 0, [], [], []
        for k, g in enumerate(run):
            if isinstance(g, _Bits):
                fmt += _INT_CODES[(g.nbytes, False)]
                for a, shift in zip(g.attrs, g.shifts(), strict=True):
                    val = f"(_t[{k}] >> {shift}) & {(1 << a.width) - 1:#x}" if shift else \
                        f"_t[{k}] & {(1 << a.width) - 1:#x}"
                    if a.enum is not None:
                        val = f"_codec.enum_or_int({self.map_name(a.enum)}, {val})"
                    assigns.append(f"self.{a.id} = {val}")
                    names.append(a.id)
                    if a.valid is not None:
                        checks += self.valid_checks(tdef, a, f"self.{a.id}", f"pos + {size}",
                                                    f"{self.dotted(tdef)}.{a.id}")
                size += g.nbytes
                continue
            path = f"{self.dotted(tdef)}.{g.id}"
            val = f"_t[{k}]"
            if g.kind == "int":
                fmt += _INT_CODES[(g.width, g.signed)]
                if g.enum is not None:
                    val = f"_codec.enum_or_int({self.map_name(g.enum)}, {val})"
                n = g.width
            elif g.kind == "float":
                fmt += _FLOAT_CODES[g.width]
                n = g.width
            else:
                fixed = len(g.contents) if g.contents is not None else \
                    const_int(g.size) if g.size is not None else None
                assert fixed is not None
                n = fixed
                fmt += f"{n}s"
                if g.contents is not None:
                    checks += [f"if _t[{k}] != {g.contents!r}:",
                               f"    raise _codec.ValidationError("
                               f"{'expected ' + repr(g.contents) + ', got '!r} + repr(_t[{k}]), "
                               f"offset=pos + {size}, path={path!r})"]
                elif g.kind == "str":
                    val = f"_codec.decode_str(_t[{k}], {g.encoding!r}, {path!r}, pos + {size})"
            assigns.append(f"self.{g.id} = {val}")
            names.append(g.id)
            if g.valid is not None:
                checks += self.valid_checks(tdef, g, f"_t[{k}]", f"pos + {size}", path)
            size += n
        prefix = f"_S_{plan.class_name.upper()}_"
        sname = prefix + str(sum(k.startswith(prefix) for k in self.structs))
        self.structs[sname] = (">" if order else "<") + fmt
        self.run_structs[(tdef.path, first)] = sname
        body = [f"if io_end - pos < {size}:",
                f"    _codec.need_until(io_end, pos, {size}, {self.dotted(tdef) + '.' + first!r})",
                f"_t = {sname}.unpack_from(buf, pos)",
                *assigns, *checks, f"pos += {size}"]
        lead = run[0]
        if isinstance(lead, Attribute) and lead.cond is not None:
            return [f"if {self.py(lead.cond, tdef)}:"] + ["    " + ln for ln in body] + \
                ["else:"] + [f"    self.{n} = None" for n in names]
        return body

    def read_bits(self, tdef: TypeDef, g: _Bits) -> list[str]:
        path = f"{self.dotted(tdef)}.{g.attrs[0].id}"
        order = "big" if g.big else "little"
        lines = [f"if io_end - pos < {g.nbytes}:",
                 f"    _codec.need_until(io_end, pos, {g.nbytes}, {path!r})",
                 f"_w = int.from_bytes(buf[pos:pos + {g.nbytes}], {order!r})",
                 f"pos += {g.nbytes}"]
        for a, shift in zip(g.attrs, g.shifts(), strict=True):
            val = f"(_w >> {shift}) & {(1 << a.width) - 1:#x}"
            if a.enum is not None:
                val = f"_codec.enum_or_int({self.map_name(a.enum)}, {val})"
            lines.append(f"self.{a.id} = {val}")
        for a in g.attrs:
            if a.valid is not None:
                lines += self.valid_checks(tdef, a, f"self.{a.id}", f"pos - {g.nbytes}",
                                           f"{self.dotted(tdef)}.{a.id}")
        return lines

    def read_attr(self, tdef: TypeDef, a: Attribute, target: str, root: str) -> list[str]:
        """Statements that read attribute `a` at `pos` into `target` and advance `pos`."""
        path = f"{self.dotted(tdef)}.{a.id}"
        body: list[str] = []
        if a.repeat is not None and self.is_int_array(a):
            if a.repeat_expr is not None:
                count = self.py(a.repeat_expr, tdef)
            else:
                body += [f"if (io_end - pos) % {a.width}:",
                         f"    _codec.need_until(io_end, pos, (io_end - pos) // {a.width} * {a.width}"
                         f" + {a.width}, {path!r})"]
                count = f"(io_end - pos) // {a.width}"
            body += [f"_n = {count}",
                     f"if _n * {a.width} < 0 or io_end - pos < _n * {a.width}:",
                     f"    _codec.need_until(io_end, pos, _n * {a.width}, {path!r})",
                     f"{target} = _codec.int_array(buf, pos, _n, {a.width}, {a.signed}, {a.big}, {path!r})",
                     f"pos += _n * {a.width}"]
        elif a.repeat is not None:
            var = f"_f_{a.id}"
            body.append(f"_items: list[{self.one_annotation(a)}] = []")
            if a.repeat == "expr":
                assert a.repeat_expr is not None
                body += [f"_count = {self.py(a.repeat_expr, tdef)}",
                         "if _count < 0 or _count > io_end - pos:",  # each item takes >= 1 byte
                         f"    raise _codec.CorruptError(f'repeat count {{_count}} is impossible', "
                         f"offset=pos, path={path!r})" if self.min_item_size(a) else
                         f"    raise _codec.CorruptError('negative repeat count', offset=pos, path={path!r})",
                         "for _i in range(_count):"]
            else:
                body.append("while pos < io_end:")
            body += ["    " + ln for ln in self.read_one(tdef, a, var, root, path)]
            body += [f"    _items.append({var})", f"{target} = _items"]
        else:
            var = f"_f_{a.id}"
            body += self.read_one(tdef, a, var, root, path)
            body.append(f"{target} = {var}")
        if a.cond is not None:
            return [f"if {self.py(a.cond, tdef)}:"] + ["    " + ln for ln in body] + \
                ["else:", f"    {target} = None"]
        return body

    def min_item_size(self, a: Attribute) -> bool:
        """True when each repeated item takes at least one byte (so counts can be bounded)."""
        if a.kind == "struct":
            assert a.type_path is not None
            return bool(self.type_size(a.type_path))
        return a.kind in ("int", "float") or a.contents is not None or (
            a.size is not None and (const_int(a.size) or 0) > 0)

    def read_one(self, tdef: TypeDef, a: Attribute, var: str, root: str, path: str) -> list[str]:
        lines: list[str] = ["_start = pos"] if a.valid is not None else []
        if a.kind == "bits":  # only as a pos instance: seq bit fields are read in groups
            nbytes = ceil_bytes(a.width)
            raw = f"int.from_bytes(buf[pos:pos + {nbytes}], {'big' if a.big else 'little'!r})"
            shift = nbytes * 8 - a.width if a.big else 0
            lines += [f"if io_end - pos < {nbytes}:",
                      f"    _codec.need_until(io_end, pos, {nbytes}, {path!r})",
                      f"{var} = ({raw} >> {shift}) & {(1 << a.width) - 1:#x}",
                      f"pos += {nbytes}"]
            if a.enum is not None:
                lines.append(f"{var} = _codec.enum_or_int({self.map_name(a.enum)}, {var})")
        elif a.kind in ("int", "float"):
            sname = self.scalar_struct(a)
            lines += [f"if io_end - pos < {a.width}:",
                      f"    _codec.need_until(io_end, pos, {a.width}, {path!r})",
                      f"{var}: {'int' if a.kind == 'int' else 'float'} = {sname}.unpack_from(buf, pos)[0]",
                      f"pos += {a.width}"]
            if a.enum is not None:
                lines.append(f"{var} = _codec.enum_or_int({self.map_name(a.enum)}, {var})")
        elif a.contents is not None:
            lines += [f"if io_end - pos < {len(a.contents)}:",
                      f"    _codec.need_until(io_end, pos, {len(a.contents)}, {path!r})",
                      f"{var} = _codec.check_contents(buf, pos, {a.contents!r}, {path!r})",
                      f"pos += {len(a.contents)}"]
        elif a.kind == "struct":
            assert a.type_path is not None
            cls = self.class_names[a.type_path]
            args = "".join(f", {self.py(x, tdef)}" for x in a.args)
            if a.size is not None or a.size_eos:
                size = "io_end - pos" if a.size_eos else self.py(a.size, tdef)  # type: ignore[arg-type]
                lines += [f"_sz = {size}",
                          "if _sz < 0 or io_end - pos < _sz:",
                          f"    _codec.need_until(io_end, pos, _sz, {path!r})",
                          f"{var}, _ = {cls}._parse(buf, pos, pos, pos + _sz, self, {root}{args})",
                          "pos += _sz"]
            else:
                lines.append(f"{var}, pos = {cls}._parse(buf, pos, io_base, io_end, self, {root}{args})")
        else:  # bytes / str / strz
            size = "io_end - pos" if a.size_eos else self.py(a.size, tdef)  # type: ignore[arg-type]
            raw = "bytes(buf[pos:pos + _sz])"
            if a.kind == "str":
                raw = f"_codec.decode_str(buf[pos:pos + _sz], {a.encoding!r}, {path!r}, pos)"
            elif a.kind == "strz":
                raw = f"_codec.decode_strz(buf[pos:pos + _sz], {a.encoding!r}, {path!r}, pos)"
            lines += [f"_sz = {size}",
                      "if _sz < 0 or io_end - pos < _sz:",
                      f"    _codec.need_until(io_end, pos, _sz, {path!r})",
                      f"{var} = {raw}"]
            if a.kind == "strz" and a.repeat is None and a.size is not None and var != "_result":
                # keep the bytes after the terminator so build() can reproduce them
                lines.append(f"self._raw_{a.id} = bytes(buf[pos:pos + _sz])")
            lines.append("pos += _sz")
        if a.valid is not None:
            lines += self.valid_checks(tdef, a, var, "_start", path)
        return lines

    def scalar_struct(self, a: Attribute) -> str:
        code = _INT_CODES[(a.width, a.signed)] if a.kind == "int" else _FLOAT_CODES[a.width]
        order = ">" if a.big else "<"
        name = f"_{code.upper() if a.kind == 'int' else 'F'}{a.width}{'BE' if a.big else 'LE'}"
        if a.kind == "int" and a.signed:
            name = f"_S{a.width}{'BE' if a.big else 'LE'}"
        elif a.kind == "int":
            name = f"_U{a.width}{'BE' if a.big else 'LE'}"
        self.structs[name] = order + code
        return name

    def valid_checks(self, tdef: TypeDef, a: Attribute, var: str, off: str, path: str) -> list[str]:
        out: list[str] = []
        for cond, text in self.valid_rules(a, var, tdef):
            out += [f"if {cond}:",
                    f"    raise _codec.invalid({path!r}, {off}, {var}, {text!r})"]
        return out

    def valid_rules(self, a: Attribute, var: str, tdef: TypeDef | None = None
                    ) -> list[tuple[str, str]]:
        """(Python condition that breaks the rule, the rule as the spec says it) per rule."""
        v = a.valid
        assert v is not None

        def expr(n: Node) -> str:
            return self.py(n, tdef, underscore=var) if tdef is not None else self.src(n)

        rules: list[tuple[str, str]] = []
        if v.eq is not None:
            rules.append((f"{var} != {expr(v.eq)}", f"== {self.src(v.eq)}"))
        if v.min is not None:
            rules.append((f"{var} < {expr(v.min)}", f">= {self.src(v.min)}"))
        if v.max is not None:
            rules.append((f"{var} > {expr(v.max)}", f"<= {self.src(v.max)}"))
        if v.any_of is not None:
            opts = ", ".join(expr(n) for n in v.any_of)
            rules.append((f"{var} not in ({opts},)", "any-of " + ", ".join(self.src(n) for n in v.any_of)))
        if v.expr is not None:
            rules.append((f"not {expr(v.expr)}", f"expr {self.src(v.expr)}"))
        return rules

    def src(self, n: Node) -> str:
        return to_python(n, lambda x: x.name, lambda p: "::".join(p))

    # -- build (general) --------------------------------------------------------------------

    def public_build(self, tdef: TypeDef) -> list[str]:
        return ["def build(self) -> bytes:",
                '    """Encode this record."""',
                "    out = bytearray()",
                "    try:",
                "        self._build(out)",
                "    except _struct.error as exc:",
                f"        raise _codec.BuildError(f'{self.dotted(tdef)}: {{exc}}') from None",
                "    return bytes(out)"]

    def general_build(self, tdef: TypeDef) -> list[str]:
        lines = ["def _build(self, out: bytearray) -> None:"]
        if self.is_flat(tdef.path):
            return lines + ["    out += self.build()"]
        body: list[str] = []
        for run in self.runs(tdef):
            if isinstance(run, list):
                body += self.write_run(tdef, run)
            elif isinstance(run, _Bits):
                body.append(f"out += ({self.bits_value(tdef, run)}).to_bytes("
                            f"{run.nbytes}, {'big' if run.big else 'little'!r})")
            else:
                body += self.write_attr(tdef, run)
        return lines + ["    " + ln for ln in (body or ["pass"])]

    def bits_value(self, tdef: TypeDef, g: _Bits) -> str:
        """The integer a bit group packs into, each field checked against its width."""
        path = f"{self.dotted(tdef)}.{g.attrs[0].id}"
        parts = [f"_codec.bits_fit(self.{a.id}, {a.width}, {path!r})" + (f" << {s}" if s else "")
                 for a, s in zip(g.attrs, g.shifts(), strict=True)]
        return " | ".join(f"({p})" if len(parts) > 1 and " << " in p else p for p in parts)

    def write_run(self, tdef: TypeDef, run: list[Attribute | _Bits]) -> list[str]:
        values = []
        for g in run:
            if isinstance(g, _Bits):
                values.append(self.bits_value(tdef, g))
                continue
            path = f"{self.dotted(tdef)}.{g.id}"
            if g.kind in ("int", "float"):
                values.append(f"self.{g.id}")
            elif g.contents is not None:
                values.append(f"_codec.fixed_bytes(self.{g.id}, {len(g.contents)}, {path!r})")
            elif g.kind == "str":
                values.append(f"_codec.padded(_codec.encode_str(self.{g.id}, {g.encoding!r}), "
                              f"{const_int(g.size)}, {path!r})")  # type: ignore[arg-type]
            else:
                values.append(f"_codec.fixed_bytes(self.{g.id}, {const_int(g.size)}, {path!r})"  # type: ignore[arg-type]
                              )
        first = run[0].attrs[0].id if isinstance(run[0], _Bits) else run[0].id
        body = [f"out += {self.run_structs[(tdef.path, first)]}.pack("] + \
            [f"    {v}," for v in values] + [")"]
        lead = run[0]
        if isinstance(lead, Attribute) and lead.cond is not None:
            return [f"if self.{lead.id} is not None:"] + ["    " + ln for ln in body]
        return body

    def write_attr(self, tdef: TypeDef, a: Attribute) -> list[str]:
        path = f"{self.dotted(tdef)}.{a.id}"
        src = f"self.{a.id}"
        if a.repeat is not None and self.is_int_array(a):
            body = [f"out += _codec.int_array_bytes({src}, {a.width}, {a.signed}, {a.big})"]
        elif a.repeat is not None:
            body = [f"for _v in {src}:"] + ["    " + ln for ln in self.write_one(tdef, a, "_v", path)]
        else:
            body = self.write_one(tdef, a, src, path)
        if a.cond is not None:
            return [f"if {src} is not None:"] + ["    " + ln for ln in body]
        return body

    def write_one(self, tdef: TypeDef, a: Attribute, var: str, path: str) -> list[str]:
        size = const_int(a.size) if a.size is not None else None
        if a.kind in ("int", "float"):
            return [f"out += {self.scalar_struct(a)}.pack({var})"]
        if a.contents is not None:
            return [f"out += _codec.fixed_bytes({var}, {len(a.contents)}, {path!r})"]
        if a.kind == "struct":
            if size is None:
                return [f"{var}._build(out)"]
            return ["_mark = len(out)", f"{var}._build(out)",
                    f"if len(out) - _mark > {size}:",
                    f"    raise _codec.BuildError('{path}: more than {size} bytes')",
                    f"out += bytes({size} - (len(out) - _mark))"]
        if a.kind == "strz" and a.repeat is None and size is not None:
            return [f"out += _codec.strz_bytes({var}, self._raw_{a.id}, {a.encoding!r}, {size}, {path!r})"]
        if a.kind in ("str", "strz"):
            enc = f"_codec.encode_str({var}, {a.encoding!r})"
            return [f"out += _codec.padded({enc}, {size}, {path!r})" if size is not None else f"out += {enc}"]
        if size is not None:
            return [f"out += _codec.fixed_bytes({var}, {size}, {path!r})"]
        return [f"out += {var}"]

    # -- __init__ ---------------------------------------------------------------------------
    # What @dataclass would generate, written out: dataclass compiles it with exec() at every
    # import (__repr__ and __eq__ come from _codec.Record), so classes say init=False.

    def init_method(self, plan: TypePlan) -> list[str]:
        params = [f"{c.name}: {c.annotation}" for c in plan.columns]
        head = [f"def __init__({', '.join(['self', *params])}) -> None:"]
        if len(head[0]) > 100:
            head = ["def __init__(", "        self,", *[f"        {p}," for p in params], ") -> None:"]
        body = [f"    self.{c.name} = {c.name}" for c in plan.columns]
        body += [f"    self.{s.name} = {s.default}" for s in plan.private]
        return head + (body or ["    pass"])

    # -- new(), instances, checksums --------------------------------------------------------

    def new_method(self, tdef: TypeDef, plan: TypePlan) -> list[str]:
        lines = ["@classmethod",
                 f"def new(cls, **fields: Any) -> {plan.class_name}:",
                 '    """A record with every field at its default (magics and the values the spec '
                 'fixes set, the rest zero)."""',
                 "    values: dict[str, Any] = {"]
        lines += [f"        {c.name!r}: {c.default}," for c in plan.columns]
        lines += ["    }",
                  "    unknown = set(fields) - set(values)",
                  "    if unknown:",
                  f"        raise TypeError(f'{plan.class_name} has no field(s) {{sorted(unknown)}}')",
                  "    values.update(fields)",
                  "    return cls(**values)"]
        return lines

    def instance_property(self, tdef: TypeDef, plan: TypePlan, inst: object) -> list[str]:
        from .ir import Instance
        assert isinstance(inst, Instance)
        doc = " ".join(inst.doc.split()) or f"The `{inst.id}` instance."
        if inst.value is not None:
            ann = "Any"
            lines = ["@property", f"def {inst.id}(self) -> {ann}:", f"    {doc!r}"]
            if any(isinstance(n, Attr) and n.name == "pos" and isinstance(n.obj, Name)
                   and n.obj.name == "_io" for n in walk(inst.value)):
                # meaningful only while parsing (where it is inlined), not on the record
                return lines + [f"    raise _codec.UnsupportedFeatureError("
                                f"{inst.id + ' reads _io.pos: available only while parsing'!r})"]
            body = self.py(inst.value, tdef, prop=True)
            if "io_end" in body or "io_base" in body:
                lines += ["    io_base, io_end = self._io_base, self._io_end"]
            lines.append(f"    return {body}")
            return lines
        assert inst.attr is not None and inst.pos is not None
        ann = self.annotation(inst.attr)
        root = "self._root" if plan.ctx_slots else "self"
        lines = ["@property", f"def {inst.id}(self) -> {ann}:", f"    {doc!r}",
                 "    buf, io_base, io_end = self._io_buf, self._io_base, self._io_end",
                 f"    pos = io_base + {self.py(inst.pos, tdef)}",
                 "    if pos < io_base or pos > io_end:",
                 f"        raise _codec.TruncatedError('position out of the stream', offset=pos, "
                 f"path={self.dotted(tdef) + '.' + inst.id!r})"]
        lines += ["    " + ln for ln in self.read_attr(tdef, inst.attr, "_result", root)]
        lines.append("    return _result")
        return lines

    def checksum_methods(self, tdef: TypeDef, plan: TypePlan) -> list[list[str]]:
        ck = tdef.checksum
        assert ck is not None
        fld = next(a for a in tdef.seq if a.id == ck.field)
        rows = {a.id: (o, s) for a, o, s in self.static_offsets(tdef)}
        off, size = rows.get(ck.field, (None, None))
        if off is None:
            raise self.err(tdef, f"-checksum field {ck.field!r} must be at a fixed offset")
        name = plan.class_name
        covers = "len(self.build())" if ck.covers is None else self.py(ck.covers, tdef, prop=True)
        if "io_end" in covers:
            raise self.err(tdef, "-checksum covers cannot use _io")
        if ck.covers is not None and const_int(ck.covers) is None:
            covers = f"int({covers})"
        length = (str(plan.size) if plan.size is not None else "len(cls.parse(buf, offset).build())") \
            if ck.covers is None else "cls.parse(buf, offset).checksum_covers()"
        return [
            ["CHECKSUM_ALGORITHM: ClassVar[str] = " + repr(ck.algorithm)],
            ["def checksum_covers(self) -> int:",
             '    """How many bytes the checksum covers, from the start of the record."""',
             f"    return {covers}"],
            ["@classmethod",
             "def checksum_of(cls, buf: _codec.Buffer, offset: int = 0) -> int:",
             f'    """{ck.algorithm} of the record at `offset` in `buf`, checksum field as zero."""',
             f"    return _codec.checksum_with_zeroed({ck.algorithm!r}, buf, offset, {length}, "
             f"{off}, {size})"],
            ["@classmethod",
             "def verify_buffer(cls, buf: _codec.Buffer, offset: int = 0) -> bool:",
             '    """True when the stored checksum of the record at `offset` is right."""',
             f"    stored = {self.scalar_struct(fld)}.unpack_from(buf, offset + {off})[0]",
             "    return bool(stored == cls.checksum_of(buf, offset))"],
            ["def compute_checksum(self) -> int:",
             '    """The checksum this record should carry (it must cover only its own bytes)."""',
             "    data = self.build()",
             "    n = self.checksum_covers()",
             "    if n > len(data):",
             f"        raise _codec.BuildError('{name}: the checksum covers bytes after the record; "
             "use checksum_of() on the whole buffer')",
             f"    return _codec.checksum_with_zeroed({ck.algorithm!r}, data, 0, n, {off}, {size})"],
            ["def verify_checksum(self) -> bool:",
             f"    return self.compute_checksum() == self.{ck.field}"],
            [f"def update_checksum(self) -> {name}:",
             '    """Set the checksum field from the current contents; returns self."""',
             f"    self.{ck.field} = self.compute_checksum()",
             "    return self"],
        ]

    def static_offsets(self, tdef: TypeDef) -> list[tuple[Attribute, int | None, int | None]]:
        out: list[tuple[Attribute, int | None, int | None]] = []
        offset: int | None = 0
        for g in self.groups(tdef):
            if isinstance(g, _Bits):
                for a in g.attrs:
                    out.append((a, offset, g.nbytes))
                offset = None if offset is None else offset + g.nbytes
                continue
            size = self.attr_size(g)
            out.append((g, offset, size))
            offset = None if offset is None or size is None else offset + size
        return out

    # -- module -----------------------------------------------------------------------------

    def render(self) -> str:
        plans = []
        for tdef in self.spec.types.values():
            plans.append(self.plan(tdef))
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - generating Python, not HTML
        )
        env.filters["pyrepr"] = repr
        enums = [self.enum_view(e) for e in self.spec.enums.values()]
        body = "\n".join(
            [ln for p in plans for m in p.methods for ln in m]
            + [c.annotation + c.default for p in plans for c in p.columns])
        text = env.get_template("module.py.j2").render(
            uses_array=re.search(r"(?<![\w.])array[\[(]", body) is not None,
            uses_field=any(p.private for p in plans),
            spec=self.spec,
            source_name=Path(self.spec.source).name,
            enums=enums,
            plans=plans,
            structs=sorted(self.structs.items()),
            types_index=[("::".join(p.tdef.path), p.class_name) for p in plans],
            enums_index=[("::".join(e.path), self.enum_names[e.path]) for e in self.spec.enums.values()],
            module_doc=self.module_doc(),
        )
        return re.sub(r"\n{3,}(?=[^\n])", "\n\n\n", text)

    def module_doc(self) -> str:
        title = self.spec.title or self.spec.id
        return title.replace('"""', "'''")

    def enum_view(self, e: EnumDef) -> dict[str, object]:
        return {"name": self.enum_names[e.path], "map": self.map_name(e.path),
                "members": [(label.upper(), value) for value, label in sorted(e.values.items())],
                "path": "::".join(e.path)}


def render_module(spec: Spec) -> str:
    """The Python source of the codec module for one spec."""
    return Renderer(spec).render()
