"""Backend 2: turn the IR into `construct` (2.10) objects -- an independent second reading of a spec.

`to_construct(spec)` gives one construct object per type of the spec; `parse_fields()` parses
with them and returns plain Python values, so tests can hold the generated codecs (backend 1,
`pyrender.py`) against a reading that shares none of their code: not `_codec`, not the
Python expression translation, not the struct fast path.

How the IR maps onto construct
------------------------------
* type -> `Struct`. Its first member is a hidden `Computed` named `_kaitai_type` (the ksy
  path, so expressions and `parse_fields` can tell which type a container holds), then one
  `Computed` per param, then the seq fields in order. Recursive types go through `LazyBound`.
* `u1`..`s8`, `f4`/`f8` -> `FormatField` with the field's byte order.
* a run of consecutive `bits` fields -> one group of whole bytes, read as a hidden
  `_bits<N>` member with the fields lifted into the type by `Computed`s (a `Rebuild` makes
  the group buildable). Big bit-endian: `BitStruct` (the first field is the most significant
  bits). Little bit-endian: `ByteSwapped(BitStruct(reversed fields))`, i.e. the group read
  as a little-endian integer with the first field in its least significant bits. The bit
  order decides, never the byte order. `b1` gives an int (0/1) like every bit field, as the
  generated codecs do (Kaitai itself gives a bool, equal to it in comparisons).
* `contents` -> `Const`.
* byte arrays -> `Bytes(size)` / `GreedyBytes` (`size-eos`).
* `str` / `strz` -> an `Adapter` over the field's bytes (`FixedSized` pads on build): UTF-16
  decodes with `surrogatepass`, ASCII and UTF-8 with `surrogateescape`; NUL characters are
  kept for `str`, `strz` stops at the first NUL code unit (2-byte aligned for UTF-16).
* user type with `size` / `size-eos` -> `FixedSized` (a substream; `_io` inside it is the
  substream); without -> the type's `Struct` on the same stream. Arguments of a
  parameterised type are evaluated in the caller's context and handed over by a small
  `Subconstruct` (`_Call`); at top level params come from the keyword arguments of
  `parse(..., name=value)` / `parse_stream(...)` (construct puts them in the context).
* `enum` -> an `Enum` (known values parse to construct's `EnumIntegerString`, unknown ones to
  plain ints, never an error; `parse_fields` turns both into `int`).
* `valid` -> a construct `Validator` on each item (rules: eq, any-of, min, max, expr with
  `_` bound to the item); a failure raises construct's `ValidationError`.
* `repeat: expr` -> `Array`; `repeat: eos` -> `_RepeatEos`, a `GreedyRange` whose parse has
  Kaitai's semantics: items are read while the stream has bytes left and an item that
  fails is an error (plain `GreedyRange` stops silently at the first item that fails, which
  would hide truncated or invalid data from an oracle).
* `if` -> `If` (absent fields are `None`).
* expressions (the `expr.py` AST) are compiled to closures evaluated against the construct
  context: field and param names from the context, `_parent` -> `ctx._`, `_root` ->
  `ctx._root` (also after a dot: `_parent._parent`), `_index` -> `ctx._index`, `_io.size` /
  `_io.pos` -> size of and position in the current (sub)stream (relative to the substream,
  as in Kaitai), `enum::member` -> its integer, `[0x4d, 0x5a]` -> bytes, `.length` /
  `.size` -> `len()` unless the object is a structure with such a field, `.to_i` ->
  `int()`, `/` -> floor division on integers and true division on floats, `and` / `or` ->
  bool. Reading an absent (`if`) field in an expression is an error (`KaitaiExprError`).
* Problems found while translating (an unknown name or enum member in an expression the
  loader did not check) raise a located `SpecError`.
* Hidden keys in parsed containers and contexts all start with `_kaitai_` or `_bits`; the
  seq fields keep their ksy ids.

Not covered
-----------
* Instances (pos and value) are not members of the Structs and are not returned by
  `parse_fields` (seq fields only). Expressions may still *read* them: a value instance is
  evaluated on first use from the same context, a pos instance is parsed on first use from
  the type's stream (seeking there and coming back); both are then kept, as in Kaitai.
  Reading an instance through a child structure (`child.inst`) works only when that
  instance needs neither `_parent` nor `_root` (a parsed container has neither).
* `-checksum` is not checked (the generated codecs do that; it is not part of the layout).
* Building is best effort (the constructs are for parsing); values must be given as
  construct expects them (bit fields, enums as ints or labels, params as keyword arguments).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import construct as cs
except ModuleNotFoundError as exc:  # an optional extra: say how to get it, in one line
    if exc.name != "construct":
        raise
    raise ModuleNotFoundError("diskspec.codegen.to_construct needs the construct package: "
                              "pip install 'diskspec[construct]'", name="construct") from None

from .expr import Attr, Binary, Bool, ByteArray, EnumLit, Index, Name, Node, Num, Str, Ternary, Unary
from .ir import Attribute, Instance, Spec, TypeDef
from .loader import SpecError, load_spec

__all__ = ["KaitaiExprError", "load_structs", "parse_fields", "spec_path", "to_construct"]

TYPE_KEY = "_kaitai_type"
"""Name of the hidden Computed member holding the ksy path of a parsed structure."""

_ARGS_KEY = "_kaitai_args"  # where _Call leaves a parameterised type's arguments
_CACHE_KEY = "_kaitai_instances"  # instance values already computed, per context
_SPECIAL = {"_parent": "_", "_root": "_root", "_io": "_io"}  # Kaitai name -> context key

Construct = Any  # construct ships no type information
Context = Any  # a construct Container
Fn = Callable[[Context, Any], Any]  # compiled expression: (context, value of `_`) -> value

_INT_CODES = {1: "B", 2: "H", 4: "L", 8: "Q"}
_FLOAT_CODES = {4: "f", 8: "d"}
_CODECS = {"ASCII": "ascii", "UTF-8": "utf-8", "UTF-16LE": "utf-16-le", "UTF-16BE": "utf-16-be"}


class KaitaiExprError(cs.ExplicitError):  # type: ignore[misc]
    """An expression cannot be evaluated (absent field, unknown name, bad operand)."""


# -- streams: Kaitai's _io is relative to the (sub)stream ---------------------------------
# construct 2.10.70 substreams (BytesIOWithOffsets) report positions of the parent stream;
# Kaitai's _io.pos / _io.size count from the start of the substream.


def _io_pos(stream: Any) -> int:
    if isinstance(stream, cs.core.BytesIOWithOffsets):
        return int(io.BytesIO.tell(stream))
    return int(stream.tell())


def _io_size(stream: Any) -> int:
    if isinstance(stream, io.BytesIO):
        return len(stream.getbuffer())
    return int(cs.stream_size(stream))


def _io_seek(stream: Any, pos: int) -> None:
    if pos < 0:
        raise cs.StreamError(f"cannot seek to {pos}", path="(instance)")
    if isinstance(stream, cs.core.BytesIOWithOffsets):
        io.BytesIO.seek(stream, pos)
    else:
        stream.seek(pos)


def _norm(value: Any) -> Any:
    """Context values as expressions see them: enum labels become their integers."""
    if isinstance(value, cs.EnumIntegerString):
        return int(value)
    if isinstance(value, cs.EnumInteger):
        return int(value)
    return value


# -- custom constructs ---------------------------------------------------------------------


class _KEnum(cs.Enum):  # type: ignore[misc]
    """construct's Enum, built from the IR's value -> label map (no keyword-name clashes)."""

    def __init__(self, subcon: Construct, values: dict[int, str]):
        cs.Adapter.__init__(self, subcon)
        self.encmapping = {cs.EnumIntegerString.new(v, k): v for v, k in values.items()}
        self.decmapping = {v: cs.EnumIntegerString.new(v, k) for v, k in values.items()}
        self.ksymapping = dict(values)


class _Text(cs.Adapter):  # type: ignore[misc]
    """Bytes <-> str with Kaitai's `str` / `strz` rules (lossless error handlers)."""

    def __init__(self, subcon: Construct, encoding: str, zero_terminated: bool):
        super().__init__(subcon)
        self.codec = _CODECS[encoding]
        self.handler = "surrogatepass" if self.codec.startswith("utf-16") else "surrogateescape"
        self.unit = 2 if self.codec.startswith("utf-16") else 1
        self.zero_terminated = zero_terminated

    def _decode(self, obj: bytes, context: Context, path: str) -> str:
        raw = bytes(obj)
        if self.zero_terminated:
            nul = bytes(self.unit)
            for i in range(0, len(raw) - self.unit + 1, self.unit):
                if raw[i:i + self.unit] == nul:
                    raw = raw[:i]
                    break
        return raw.decode(self.codec, self.handler)

    def _encode(self, obj: str, context: Context, path: str) -> bytes:
        return obj.encode(self.codec, self.handler)


class _Call(cs.Subconstruct):  # type: ignore[misc]
    """Evaluate a parameterised type's arguments in the caller's context, then read it."""

    def __init__(self, subcon: Construct, args: list[tuple[str, Fn]]):
        super().__init__(subcon)
        self.args = args

    def _pass(self, context: Context) -> None:
        context[_ARGS_KEY] = {name: fn(context, None) for name, fn in self.args}

    def _parse(self, stream: Any, context: Context, path: str) -> Any:
        self._pass(context)
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Context, path: str) -> Any:
        self._pass(context)
        return self.subcon._build(obj, stream, context, path)

    def _sizeof(self, context: Context, path: str) -> int:
        self._pass(context)
        return int(self.subcon._sizeof(context, path))


class _RepeatEos(cs.GreedyRange):  # type: ignore[misc]
    """`repeat: eos`: items while the stream has bytes left; a failing item is an error."""

    def _parse(self, stream: Any, context: Context, path: str) -> Any:
        out = cs.ListContainer()
        i = 0
        while _io_pos(stream) < _io_size(stream):
            before = _io_pos(stream)
            context._index = i
            out.append(self.subcon._parsereport(stream, context, path))
            if _io_pos(stream) == before:
                raise cs.ExplicitError("repeat: eos item consumed no bytes", path=path)
            i += 1
        return out


class _Valid(cs.Validator):  # type: ignore[misc]
    """`valid`: checked on parse (and on build when a value is given)."""

    def __init__(self, subcon: Construct, check: Callable[[Any, Context], bool]):
        super().__init__(subcon)
        self.check = check

    def _validate(self, obj: Any, context: Context, path: str) -> bool:
        return obj is None and bool(context.get("_building")) or self.check(obj, context)


# -- the builder ---------------------------------------------------------------------------


class _Builder:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.done: dict[tuple[str, ...], Construct] = {}
        self.busy: set[tuple[str, ...]] = set()
        self.instance_fns: dict[tuple[tuple[str, ...], str], Callable[[Context], Any]] = {}

    # types ---------------------------------------------------------------------------------

    def build_all(self) -> dict[tuple[str, ...], Construct]:
        for path in self.spec.types:
            self.type_con(path)
        for tdef in self.spec.types.values():
            for inst in tdef.instances:
                with self.located(tdef, inst.line, f"instances/{inst.id}"):
                    self.instance_fns[(tdef.path, inst.id)] = self.make_instance(tdef, inst)
        return {path: self.done[path] for path in self.spec.types}

    @contextmanager
    def located(self, tdef: TypeDef, line: int, where: str) -> Iterator[None]:
        """Turn a problem found while translating into a located SpecError."""
        try:
            yield
        except (ValueError, KeyError) as exc:
            ypath = "/".join(f"types/{p}" for p in tdef.path)
            raise SpecError(f"{self.spec.source}:{line}: {ypath}/{where}: construct backend: "
                            f"{exc}") from None

    def type_con(self, path: tuple[str, ...]) -> Construct:
        if path in self.done:
            return self.done[path]
        if path in self.busy:  # a recursive type: resolve when parsing
            return cs.LazyBound(lambda: self.done[path])
        self.busy.add(path)
        con = self.make_type(self.spec.types[path])
        self.busy.discard(path)
        self.done[path] = con
        return con

    def make_type(self, tdef: TypeDef) -> Construct:
        members: list[Construct] = [TYPE_KEY / cs.Computed(tdef.path)]
        for p in tdef.params:
            members.append(p.id / cs.Computed(_param_getter(p.id)))
        run: list[Attribute] = []
        groups = 0
        for a in tdef.seq:
            if a.kind == "bits":
                run.append(a)
                continue
            if run:
                members += self.bit_group(tdef, run, groups)
                groups += 1
                run = []
            with self.located(tdef, a.line, f"seq/{a.id}"):
                members.append(a.id / self.attr_con(tdef, a))
        if run:
            with self.located(tdef, run[0].line, f"seq/{run[0].id}"):
                members += self.bit_group(tdef, run, groups)
        return cs.Struct(*members)

    def bit_group(self, tdef: TypeDef, attrs: list[Attribute], n: int) -> list[Construct]:
        total = sum(a.width for a in attrs)
        if total % 8:
            raise ValueError("a run of bit fields ends off a byte boundary")
        big = attrs[0].big
        inner = []
        for a in attrs:
            field: Construct = cs.BitsInteger(a.width)
            if a.enum is not None:
                field = _KEnum(field, self.spec.enums[a.enum].values)
            inner.append(a.id / field)
        group = cs.BitStruct(*inner) if big else cs.ByteSwapped(cs.BitStruct(*reversed(inner)))
        key = f"_bits{n}"
        ids = [a.id for a in attrs]
        out = [key / cs.Rebuild(group, lambda ctx: cs.Container((i, ctx[i]) for i in ids))]
        for a in attrs:
            lifted: Construct = cs.Computed(_lift(key, a.id))
            if a.valid is not None:
                lifted = _Valid(lifted, self.validator(tdef, a))
            out.append(a.id / lifted)
        return out

    # attributes ----------------------------------------------------------------------------

    def attr_con(self, tdef: TypeDef, a: Attribute) -> Construct:
        """The construct reading attribute `a` (a seq field or a pos instance's body)."""
        con = self.one(tdef, a)
        if a.enum is not None:
            con = _KEnum(con, self.spec.enums[a.enum].values)
        if a.valid is not None:
            con = _Valid(con, self.validator(tdef, a))
        if a.repeat == "expr":
            assert a.repeat_expr is not None
            con = cs.Array(self.ctx_fn(tdef, a.repeat_expr), con)
        elif a.repeat == "eos":
            con = _RepeatEos(con)
        if a.cond is not None:
            cond = self.compile(tdef, a.cond)
            con = cs.If(lambda ctx: bool(cond(ctx, None)), con)
        return con

    def one(self, tdef: TypeDef, a: Attribute) -> Construct:
        if a.contents is not None:
            return cs.Const(a.contents)
        if a.kind == "int":
            code = _INT_CODES[a.width]
            return cs.FormatField(">" if a.big else "<", code.lower() if a.signed else code)
        if a.kind == "float":
            return cs.FormatField(">" if a.big else "<", _FLOAT_CODES[a.width])
        if a.kind == "bits":  # a bits pos instance: its own whole-byte group
            nbytes = (a.width + 7) // 8
            return cs.BytesInteger(nbytes, swapped=not a.big) if a.width == nbytes * 8 else \
                self.odd_bits(a)
        size = self.size_fn(tdef, a)
        if a.kind in ("str", "strz"):
            assert a.encoding is not None
            text = _Text(cs.GreedyBytes, a.encoding, a.kind == "strz")
            return text if size is None else cs.FixedSized(size, text)
        if a.kind == "struct":
            assert a.type_path is not None
            con = self.type_con(a.type_path)
            params = self.spec.types[a.type_path].params
            if a.args:
                con = _Call(con, [(p.id, self.compile(tdef, arg))
                                  for p, arg in zip(params, a.args, strict=True)])
            return con if size is None else cs.FixedSized(size, con)
        return cs.GreedyBytes if size is None else cs.Bytes(size)

    def odd_bits(self, a: Attribute) -> Construct:
        nbytes = (a.width + 7) // 8
        mask = (1 << a.width) - 1
        if a.big:  # the first bits of the bytes read
            return cs.ExprAdapter(cs.BytesInteger(nbytes), lambda v, c: v >> (nbytes * 8 - a.width),
                                  lambda v, c: v << (nbytes * 8 - a.width))
        return cs.ExprAdapter(cs.BytesInteger(nbytes, swapped=True), lambda v, c: v & mask,
                              lambda v, c: v)

    def size_fn(self, tdef: TypeDef, a: Attribute) -> Any:
        """The byte size of `a` as an int or a context lambda; None for `size-eos` readers
        that can simply read to the end (byte arrays, strings)."""
        if a.size_eos:
            if a.kind == "struct":
                return lambda ctx: _io_size(ctx._io) - _io_pos(ctx._io)
            return None
        if a.size is None:
            return None
        if isinstance(a.size, Num) and isinstance(a.size.value, int):
            return a.size.value
        return self.ctx_fn(tdef, a.size)

    def validator(self, tdef: TypeDef, a: Attribute) -> Callable[[Any, Context], bool]:
        v = a.valid
        assert v is not None
        rules: list[Callable[[Context, Any], bool]] = []

        def rule(node: Node, test: Callable[[Any, Any], bool]) -> None:
            fn = self.compile(tdef, node)
            rules.append(lambda ctx, value: test(value, fn(ctx, value)))

        if v.eq is not None:
            rule(v.eq, lambda x, y: bool(x == y))
        if v.min is not None:
            rule(v.min, lambda x, y: bool(x >= y))
        if v.max is not None:
            rule(v.max, lambda x, y: bool(x <= y))
        if v.any_of is not None:
            options = [self.compile(tdef, n) for n in v.any_of]
            rules.append(lambda ctx, value: any(value == o(ctx, value) for o in options))
        if v.expr is not None:
            fn = self.compile(tdef, v.expr)
            rules.append(lambda ctx, value: bool(fn(ctx, value)))

        def check(obj: Any, ctx: Context) -> bool:
            value = _norm(obj)
            return all(r(ctx, value) for r in rules)

        return check

    # expressions ---------------------------------------------------------------------------

    def ctx_fn(self, tdef: TypeDef, node: Node) -> Callable[[Context], Any]:
        fn = self.compile(tdef, node)
        return lambda ctx: fn(ctx, None)

    def compile(self, tdef: TypeDef, node: Node) -> Fn:
        """A closure evaluating `node` (an expression of type `tdef`) against a context."""
        if isinstance(node, Num | Bool | Str):
            value = node.value
            return lambda ctx, u: value
        if isinstance(node, ByteArray):
            raw = bytes(node.items)
            return lambda ctx, u: raw
        if isinstance(node, EnumLit):
            enum_value = self.enum_value(tdef, node)
            return lambda ctx, u: enum_value
        if isinstance(node, Name):
            return self.name(tdef, node.name)
        if isinstance(node, Attr):
            return self.attr(tdef, node)
        if isinstance(node, Index):
            obj, idx = self.compile(tdef, node.obj), self.compile(tdef, node.index)
            return lambda ctx, u: _item(_present(obj(ctx, u), node), idx(ctx, u))
        if isinstance(node, Unary):
            operand = self.compile(tdef, node.operand)
            if node.op == "not":
                return lambda ctx, u: not operand(ctx, u)
            if node.op == "-":
                return lambda ctx, u: -operand(ctx, u)
            return lambda ctx, u: ~operand(ctx, u)
        if isinstance(node, Binary):
            return self.binary(tdef, node)
        assert isinstance(node, Ternary)
        cond, then, other = (self.compile(tdef, n) for n in (node.cond, node.then, node.other))
        return lambda ctx, u: then(ctx, u) if cond(ctx, u) else other(ctx, u)

    def binary(self, tdef: TypeDef, node: Binary) -> Fn:
        left, right = self.compile(tdef, node.left), self.compile(tdef, node.right)
        op = node.op
        if op == "and":
            return lambda ctx, u: bool(left(ctx, u)) and bool(right(ctx, u))
        if op == "or":
            return lambda ctx, u: bool(left(ctx, u)) or bool(right(ctx, u))
        fn = _BINARY[op]
        return lambda ctx, u: fn(left(ctx, u), right(ctx, u))

    def enum_value(self, tdef: TypeDef, node: EnumLit) -> int:
        for depth in range(len(tdef.path), -1, -1):
            path = (*tdef.path[:depth], *node.enum)
            if path in self.spec.enums:
                for value, label in self.spec.enums[path].values.items():
                    if label == node.member:
                        return value
        raise ValueError(f"unknown enum member {'::'.join(node.enum)}::{node.member}")

    def name(self, tdef: TypeDef, name: str) -> Fn:
        if name == "_":
            return lambda ctx, u: u
        if name == "_parent":
            return lambda ctx, u: _get(ctx, "_", "_parent")
        if name == "_root":
            return lambda ctx, u: _get(ctx, "_root", "_root")
        if name == "_index":
            return lambda ctx, u: _get(ctx, "_index", "_index")
        if name == "_io":
            return lambda ctx, u: _get(ctx, "_io", "_io")
        conditional = {a.id for a in tdef.seq if a.cond is not None}
        if any(a.id == name for a in tdef.seq) or any(p.id == name for p in tdef.params):
            def field(ctx: Context, u: Any) -> Any:
                value = _get(ctx, name, name)
                if value is None and name in conditional:
                    raise KaitaiExprError(f"{name}: the field is absent but an expression needs it")
                return _norm(value)
            return field
        inst = next((i for i in tdef.instances if i.id == name), None)
        if inst is None:
            raise ValueError(f"unknown name {name!r}")
        path = tdef.path
        return lambda ctx, u: self.read_instance(ctx, path, name)

    def attr(self, tdef: TypeDef, node: Attr) -> Fn:
        name = node.name
        if isinstance(node.obj, Name) and node.obj.name == "_io":
            return lambda ctx, u: _stream_attr(_get(ctx, "_io", "_io"), name)
        obj = self.compile(tdef, node.obj)

        def get(ctx: Context, u: Any) -> Any:
            value = _present(obj(ctx, u), node)
            if isinstance(value, cs.Container):
                if name in _SPECIAL:
                    return _get(value, _SPECIAL[name], name)
                if name in value:
                    return _norm(value[name])
                if TYPE_KEY in value:
                    path = value[TYPE_KEY]
                    if any(i.id == name for i in self.spec.types[path].instances):
                        return self.read_instance(value, path, name)
            if name in ("length", "size") and isinstance(value, bytes | str | list):
                return len(value)
            if name == "to_i":
                return int(value)
            if isinstance(value, io.IOBase):
                return _stream_attr(value, name)
            if isinstance(value, cs.Container):
                raise KaitaiExprError(f".{name}: no such field or instance (or not read yet)")
            raise KaitaiExprError(f"cannot read .{name} of {type(value).__name__}")

        return get

    def read_instance(self, container: Context, path: tuple[str, ...], name: str) -> Any:
        """An instance's value, computed on first use and then kept (as Kaitai does)."""
        cache = container.get(_CACHE_KEY)
        if cache is None:
            cache = container[_CACHE_KEY] = {}
        if name not in cache:
            cache[name] = self.instance_fns[(path, name)](container)
        return cache[name]

    def make_instance(self, tdef: TypeDef, inst: Instance) -> Callable[[Context], Any]:
        if inst.value is not None:
            value = self.compile(tdef, inst.value)
            return lambda ctx: value(ctx, None)
        assert inst.pos is not None and inst.attr is not None
        pos = self.compile(tdef, inst.pos)
        con = self.attr_con(tdef, inst.attr)

        def read(ctx: Context) -> Any:
            stream = _get(ctx, "_io", "_io")
            back = _io_pos(stream)
            try:
                _io_seek(stream, pos(ctx, None))
                return _norm(con._parsereport(stream, ctx, f"(instance {inst.id})"))
            finally:
                _io_seek(stream, back)

        return read


def _param_getter(name: str) -> Callable[[Context], Any]:
    def get(ctx: Context) -> Any:
        caller = ctx._
        args = caller.get(_ARGS_KEY)
        if args is not None and name in args:
            return args[name]
        if name in caller:  # top level: parse(..., name=value)
            return caller[name]
        raise KaitaiExprError(f"param {name!r} not given (pass it as a keyword argument)")
    return get


def _lift(key: str, name: str) -> Callable[[Context], Any]:
    return lambda ctx: ctx[key][name]


def _get(ctx: Context, key: str, what: str) -> Any:
    try:
        return ctx[key]
    except (KeyError, TypeError):
        raise KaitaiExprError(f"{what} is not available here") from None


def _present(value: Any, node: Node) -> Any:
    if value is None:
        raise KaitaiExprError(f"{type(node).__name__} of an absent value")
    return value


def _stream_attr(stream: Any, name: str) -> int | bool:
    if name == "size":
        return _io_size(stream)
    if name == "pos":
        return _io_pos(stream)
    if name == "eof":
        return _io_pos(stream) >= _io_size(stream)
    raise KaitaiExprError(f"_io.{name} is not supported")


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        raise KaitaiExprError(f"division by zero ({a} / 0)")
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if b == 0:
        raise KaitaiExprError(f"modulo by zero ({a} % 0)")
    return a % b


def _item(seq: Any, index: Any) -> Any:
    try:
        return _norm(seq[index])
    except IndexError:
        raise KaitaiExprError(f"index {index} out of range (length {len(seq)})") from None


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": _div, "%": _mod,
    "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b,
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


# -- public API ----------------------------------------------------------------------------


def to_construct(spec: Spec) -> dict[tuple[str, ...], Construct]:
    """One construct object per type of the spec, keyed by the type's ksy path (() = top level)."""
    return _Builder(spec).build_all()


def spec_path(name_or_path: str | Path) -> Path:
    """A spec by path, or by the name of one shipped in the installed diskspec.formats
    ("vhd" -> its vhd.ksy), so that callers need no checkout."""
    path = Path(name_or_path)
    if path.suffix == ".ksy" or len(path.parts) > 1:
        return path
    shipped = Path(__file__).resolve().parent.parent / "formats"
    try:
        import diskspec.formats

        shipped = Path(diskspec.formats.__file__).resolve().parent
    except ImportError:  # the codecs package is absent: only the path next to this one
        pass
    found = shipped / f"{path.name}.ksy"
    if not found.is_file():
        known = ", ".join(sorted(p.stem for p in shipped.glob("*.ksy")))
        raise SpecError(f"unknown spec {str(name_or_path)!r} (the installed specs: {known}; "
                        "or give the path of a .ksy file)")
    return found


def load_structs(spec: str | Path) -> dict[tuple[str, ...], Construct]:
    """load_spec + to_construct; `spec` is a .ksy path or the name of a shipped spec ("vhd")."""
    return to_construct(load_spec(spec_path(spec)))


_CACHE: dict[tuple[int, str], tuple[Spec, dict[tuple[str, ...], Construct]]] = {}


def _structs_for(spec: Spec) -> dict[tuple[str, ...], Construct]:
    key = (id(spec), spec.sha256)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not spec:
        if len(_CACHE) > 32:
            _CACHE.clear()
        hit = (spec, to_construct(spec))
        _CACHE[key] = hit
    return hit[1]


def parse_fields(spec: Spec, type_path: tuple[str, ...], buf: bytes, offset: int = 0,
                 **params: Any) -> dict[str, Any]:
    """Parse with construct and return plain Python values: a dict of seq field id -> value, where
    ints stay ints (enums as their int value), bytes as bytes, strings as str, nested types as dicts,
    repeats as lists, absent `if` fields as None. Used by tests as an independent oracle.

    The stream is all of `buf` (so `_io.size` is `len(buf)` at top level, as in the generated
    codecs' `parse(buf, offset)`); params of the type are keyword arguments.
    """
    con = _structs_for(spec)[type_path]
    stream = io.BytesIO(bytes(buf))
    stream.seek(offset)
    obj = con.parse_stream(stream, **params)
    return _plain_struct(spec, obj)


def _plain_struct(spec: Spec, obj: Any) -> dict[str, Any]:
    tdef = spec.types[obj[TYPE_KEY]]
    return {a.id: _plain(spec, obj[a.id]) for a in tdef.seq}


def _plain(spec: Spec, value: Any) -> Any:
    if isinstance(value, cs.Container) and TYPE_KEY in value:
        return _plain_struct(spec, value)
    if isinstance(value, list):
        return [_plain(spec, v) for v in value]
    if isinstance(value, cs.EnumIntegerString | cs.EnumInteger):
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value

