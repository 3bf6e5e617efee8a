"""The Kaitai expression language (the subset our specs use): tokenizer, parser, AST.

Expressions are parsed once, at load time, into a small AST that each backend translates
(`to_python` here; the construct backend evaluates the same AST against its context).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class ExprError(ValueError):
    """A malformed expression; the loader adds file, line and key."""


# -- AST -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    value: int | float


@dataclass(frozen=True, slots=True)
class Str:
    value: str


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool


@dataclass(frozen=True, slots=True)
class ByteArray:
    """A byte-array literal, `[0x12, 0x34]`."""

    items: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Name:
    name: str  # a field, param or instance id, or one of _parent _root _io _index _


@dataclass(frozen=True, slots=True)
class Attr:
    obj: Node
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    obj: Node
    index: Node


@dataclass(frozen=True, slots=True)
class EnumLit:
    enum: tuple[str, ...]  # path of the enum, e.g. ("disk_type",) or ("footer", "kind")
    member: str


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-", "~", "not"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Ternary:
    cond: Node
    then: Node
    other: Node


Node = Num | Str | Bool | ByteArray | Name | Attr | Index | EnumLit | Unary | Binary | Ternary


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first."""
    yield node
    if isinstance(node, Attr):
        yield from walk(node.obj)
    elif isinstance(node, Index):
        yield from walk(node.obj)
        yield from walk(node.index)
    elif isinstance(node, Unary):
        yield from walk(node.operand)
    elif isinstance(node, Binary):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Ternary):
        yield from walk(node.cond)
        yield from walk(node.then)
        yield from walk(node.other)


def const_int(node: Node) -> int | None:
    """The value of a constant integer expression, else None."""
    if isinstance(node, Num) and isinstance(node.value, int):
        return node.value
    if isinstance(node, Unary) and node.op == "-":
        inner = const_int(node.operand)
        return None if inner is None else -inner
    if isinstance(node, Binary):
        a, b = const_int(node.left), const_int(node.right)
        if a is None or b is None:
            return None
        ops: dict[str, Callable[[int, int], int]] = {
            "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
            "<<": lambda x, y: x << y, ">>": lambda x, y: x >> y,
            "&": lambda x, y: x & y, "|": lambda x, y: x | y, "^": lambda x, y: x ^ y,
        }
        if node.op in ops:
            return ops[node.op](a, b)
        if node.op in ("/", "%") and b != 0:
            return a // b if node.op == "/" else a % b
    return None


# -- tokenizer -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|\d[\d_]*(?:\.\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*"|'[^']*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>::|<<|>>|<=|>=|==|!=|[-+*/%&|^~<>?:.()\[\],])
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot read expression at {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    out.append(("end", ""))
    return out


# -- parser (precedence climbing) ----------------------------------------------------------

_BINARY_LEVELS: list[tuple[str, ...]] = [
    ("or",),
    ("and",),
    ("==", "!=", "<", "<=", ">", ">="),
    ("|",),
    ("^",),
    ("&",),
    ("<<", ">>"),
    ("+", "-"),
    ("*", "/", "%"),
]


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, val = self.take()
        if val != value:
            raise ExprError(f"expected {value!r} in {self.text!r}, found {val or 'end'!r}")

    def parse(self) -> Node:
        node = self.ternary()
        if self.peek()[0] != "end":
            raise ExprError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def ternary(self) -> Node:
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take()
            then = self.ternary()
            self.expect(":")
            other = self.ternary()
            return Ternary(cond, then, other)
        return cond

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        if level == 2 and self.peek() == ("name", "not"):  # looser than comparisons
            self.take()
            return Unary("not", self.binary(level))
        left = self.binary(level + 1)
        while self.peek()[1] in _BINARY_LEVELS[level] and self.peek()[0] in ("op", "name"):
            op = self.take()[1]
            right = self.binary(level + 1)
            left = Binary(op, left, right)
        return left

    def unary(self) -> Node:
        kind, val = self.peek()
        if kind == "op" and val in ("-", "~"):
            self.take()
            return Unary(val, self.unary())
        return self.postfix(self.atom())

    def atom(self) -> Node:
        kind, val = self.take()
        if kind == "num":
            clean = val.replace("_", "")
            if "." in clean and not clean.lower().startswith("0x"):
                return Num(float(clean))
            return Num(int(clean, 0))
        if kind == "str":
            body = val[1:-1]
            if val[0] == '"':
                body = body.encode("latin-1", "backslashreplace").decode("unicode_escape")
            return Str(body)
        if kind == "name":
            if val in ("true", "false"):
                return Bool(val == "true")
            if self.peek()[1] == "::":
                path = [val]
                while self.peek()[1] == "::":
                    self.take()
                    k, v = self.take()
                    if k != "name":
                        raise ExprError(f"bad enum reference in {self.text!r}")
                    path.append(v)
                return EnumLit(tuple(path[:-1]), path[-1])
            return Name(val)
        if val == "(":
            node = self.ternary()
            self.expect(")")
            return node
        if val == "[":
            items: list[int] = []
            while self.peek()[1] != "]":
                item = const_int(self.ternary())
                if item is None or not 0 <= item <= 255:
                    raise ExprError(f"array literals hold byte constants, in {self.text!r}")
                items.append(item)
                if self.peek()[1] == ",":
                    self.take()
            self.expect("]")
            return ByteArray(tuple(items))
        raise ExprError(f"unexpected {val or 'end'!r} in {self.text!r}")

    def postfix(self, node: Node) -> Node:
        while True:
            val = self.peek()[1]
            if val == ".":
                self.take()
                kind, name = self.take()
                if kind != "name":
                    raise ExprError(f"expected a name after '.' in {self.text!r}")
                node = Attr(node, name)
            elif val == "[":
                self.take()
                idx = self.ternary()
                self.expect("]")
                node = Index(node, idx)
            else:
                return node


def parse_expr(text: str | int | bool) -> Node:
    """Parse a Kaitai expression (YAML may already have turned it into an int or bool)."""
    if isinstance(text, bool):
        return Bool(text)
    if isinstance(text, int):
        return Num(text)
    return _Parser(str(text)).parse()


# -- translation to Python -----------------------------------------------------------------

_PY_OPS = {"/": "//", "and": "and", "or": "or"}


def to_python(node: Node, resolve: Callable[[Name], str],
              enum_class: Callable[[tuple[str, ...]], str],
              is_member: Callable[[Attr], bool] = lambda _: False) -> str:
    """Python source for an expression.

    `resolve` turns a bare name (a field, `_parent`, `_io` ...) into Python source;
    `enum_class` turns an enum path into the name of its generated IntEnum; `is_member` says
    whether `x.size` / `x.length` names a field of a user type (else it is the length of x).
    """

    def go(n: Node) -> str:
        if isinstance(n, Num | Bool):
            return repr(n.value)
        if isinstance(n, Str):
            return repr(n.value)
        if isinstance(n, ByteArray):
            return repr(bytes(n.items))
        if isinstance(n, Name):
            return resolve(n)
        if isinstance(n, EnumLit):
            return f"{enum_class(n.enum)}.{n.member.upper()}"
        if isinstance(n, Attr):
            if n.name in ("length", "size") and not _is_io(n.obj) and not is_member(n):
                return f"len({go(n.obj)})"
            if n.name == "to_i":
                return f"int({go(n.obj)})"
            if _is_io(n.obj):
                return resolve(Name(f"_io.{n.name}"))
            return f"{go(n.obj)}.{n.name}"
        if isinstance(n, Index):
            return f"{go(n.obj)}[{go(n.index)}]"
        if isinstance(n, Unary):
            return f"(not {go(n.operand)})" if n.op == "not" else f"({n.op}{go(n.operand)})"
        if isinstance(n, Binary):
            op = _PY_OPS.get(n.op, n.op)
            if n.op == "/" and (_has_float(n.left) or _has_float(n.right)):
                op = "/"  # Kaitai divides floats as floats, integers as integers
            return f"({go(n.left)} {op} {go(n.right)})"
        return f"({go(n.then)} if {go(n.cond)} else {go(n.other)})"

    return go(node)


def _has_float(node: Node) -> bool:
    return any(isinstance(n, Num) and isinstance(n.value, float) for n in walk(node))


def _is_io(node: Node) -> bool:
    return isinstance(node, Name) and node.name == "_io"


def names_used(node: Node) -> set[str]:
    """Bare names an expression reads (fields, params, special names)."""
    return {n.name for n in walk(node) if isinstance(n, Name)}
