"""Load a .ksy file: parse YAML with line numbers, check it against our subset, build the IR.

Every problem is a SpecError whose message is `file.ksy:LINE: path/to/key: message`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from diskspec.formats.errors import DiskspecError

from .expr import EnumLit, ExprError, Name, Node, const_int, parse_expr, walk
from .ir import Attribute, Checksum, EnumDef, Instance, Param, Spec, TypeDef, Valid


class SpecError(DiskspecError):
    """A .ksy that is not valid in our subset; the message is located."""


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int
    key_lines: dict[Any, int]


class _List(list[Any]):
    line: int


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _List:
    out = _List(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_INT_TYPE = re.compile(r"^([us])([1248])(le|be)?$")
_FLOAT_TYPE = re.compile(r"^f([48])(le|be)?$")
_BITS_TYPE = re.compile(r"^b([1-9][0-9]?)(le|be)?$")
_USER_TYPE = re.compile(r"^([a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*)(?:\((.*)\))?$")
ENCODINGS = ("ASCII", "UTF-8", "UTF-16LE", "UTF-16BE")
CHECKSUM_ALGORITHMS = ("crc32c", "ones-complement-sum", "crc32")

_TOP_KEYS = {"meta", "doc", "doc-ref", "seq", "instances", "types", "enums", "params"}
_META_KEYS = {"id", "title", "application", "file-extension", "xref", "license", "ks-version",
              "endian", "bit-endian", "encoding", "tags"}
_TYPE_KEYS = {"meta", "doc", "doc-ref", "params", "seq", "instances", "types", "enums"}
_ATTR_KEYS = {"id", "type", "size", "size-eos", "contents", "encoding", "enum", "repeat",
              "repeat-expr", "if", "valid", "doc", "doc-ref", "terminator", "pad-right",
              "include", "consume"}
_INSTANCE_KEYS = (_ATTR_KEYS - {"id"}) | {"value", "pos"}
_VALID_KEYS = {"eq", "any-of", "min", "max", "expr"}
_CUSTOM = {"-checksum", "-orig-id", "-comment", "-default"}


class _Ctx:
    """Where we are in the file, for located errors."""

    def __init__(self, source: str):
        self.source = source

    def error(self, line: int, path: str, message: str) -> SpecError:
        return SpecError(f"{self.source}:{line}: {path}: {message}")


def _line_of(node: Any, key: Any = None, default: int = 1) -> int:
    if isinstance(node, _Map):
        if key is not None and key in node.key_lines:
            return node.key_lines[key]
        return node.line
    if isinstance(node, _List):
        return node.line
    return default


def load_spec(path: str | Path) -> Spec:
    """Read, validate and convert one .ksy file."""
    p = Path(path)
    raw = p.read_bytes()
    source = str(path)
    ctx = _Ctx(source)
    try:
        doc = yaml.load(raw.decode("utf-8"), Loader=_LineLoader)  # noqa: S506 - safe subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ctx.error(line, "", f"YAML error: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ctx.error(1, "", f"not UTF-8: {exc}") from None
    if not isinstance(doc, _Map):
        raise ctx.error(1, "", "a .ksy file must be a YAML mapping")
    return _Builder(ctx, doc, hashlib.sha256(raw).hexdigest()).build()


class _Builder:
    def __init__(self, ctx: _Ctx, doc: _Map, sha: str):
        self.ctx = ctx
        self.doc = doc
        self.sha = sha
        self.types: dict[tuple[str, ...], TypeDef] = {}
        self.enums: dict[tuple[str, ...], EnumDef] = {}
        self.raw_types: dict[tuple[str, ...], _Map] = {}
        self.encoding: str | None = None
        self.endian_known: dict[tuple[str, ...], bool] = {}

    # -- helpers ----------------------------------------------------------------------------

    def err(self, node: Any, key: Any, path: str, message: str) -> SpecError:
        return self.ctx.error(_line_of(node, key), path, message)

    def check_keys(self, node: _Map, allowed: set[str], path: str) -> None:
        for key in node:
            if not isinstance(key, str):
                raise self.err(node, key, path, f"key {key!r} is not a string")
            if key.startswith("-"):
                if key not in _CUSTOM:
                    raise self.err(node, key, f"{path}/{key}",
                                   f"unknown custom key (known: {', '.join(sorted(_CUSTOM))})")
                continue
            if key not in allowed:
                raise self.err(node, key, f"{path}/{key}",
                               "not in the supported Kaitai subset (see codegen/SPEC_LANGUAGE.md)")

    def expr(self, node: Any, key: Any, value: Any, path: str) -> Node:
        try:
            return parse_expr(value)
        except ExprError as exc:
            raise self.err(node, key, path, str(exc)) from None

    def text(self, node: _Map, key: str, path: str) -> str:
        value = node.get(key, "")
        if not isinstance(value, str):
            raise self.err(node, key, f"{path}/{key}", "must be a string")
        return value

    # -- top level --------------------------------------------------------------------------

    def build(self) -> Spec:
        doc = self.doc
        self.check_keys(doc, _TOP_KEYS, "")
        meta = doc.get("meta")
        if not isinstance(meta, _Map):
            raise self.err(doc, "meta", "meta", "missing or not a mapping")
        self.check_keys(meta, _META_KEYS | {"imports"}, "meta")
        if "imports" in meta:
            raise self.err(meta, "imports", "meta/imports", "imports are not supported")
        spec_id = meta.get("id")
        if not isinstance(spec_id, str) or not _ID.match(spec_id):
            raise self.err(meta, "id", "meta/id", "must be a snake_case identifier")
        big = self.endian(meta, "endian", "meta", default=None)
        bit_big = self.endian(meta, "bit-endian", "meta", default=True)
        enc = meta.get("encoding")
        if enc is not None:
            self.encoding = self.check_encoding(meta, "encoding", "meta/encoding", enc)
        self.collect(doc, (), spec_id, "", big, bit_big)
        for tpath, node in self.raw_types.items():
            self.fill(self.types[tpath], node)
        return Spec(
            id=spec_id,
            title=self.text(meta, "title", "meta"),
            source=self.ctx.source,
            sha256=self.sha,
            doc=self.text(doc, "doc", ""),
            doc_ref=_doc_ref(doc.get("doc-ref", "")),
            meta=dict(meta),
            types=self.types,
            enums=self.enums,
        )

    def endian(self, meta: _Map, key: str, path: str, default: bool | None) -> bool | None:
        if key not in meta:
            return default
        value = meta[key]
        if value not in ("be", "le"):
            raise self.err(meta, key, f"{path}/{key}", "must be 'be' or 'le'")
        return bool(value == "be")

    def check_encoding(self, node: Any, key: str, path: str, value: Any) -> str:
        norm = str(value).upper().replace("UTF8", "UTF-8").replace("UTF16", "UTF-16")
        if norm == "ASCII" or norm in ENCODINGS:
            return norm
        raise self.err(node, key, path, f"encoding {value!r} not supported ({', '.join(ENCODINGS)})")

    # -- pass 1: every type and enum with its path ------------------------------------------

    def collect(self, node: _Map, tpath: tuple[str, ...], name: str, ypath: str,
                big: bool | None, bit_big: bool | None) -> None:
        if tpath:
            self.check_keys(node, _TYPE_KEYS, ypath)
            meta = node.get("meta")
            if meta is not None:
                if not isinstance(meta, _Map):
                    raise self.err(node, "meta", f"{ypath}/meta", "must be a mapping")
                self.check_keys(meta, {"endian", "bit-endian"}, f"{ypath}/meta")
                big = self.endian(meta, "endian", f"{ypath}/meta", big)
                bit_big = self.endian(meta, "bit-endian", f"{ypath}/meta", bit_big)
        orig = node.get("-orig-id")
        tdef = TypeDef(path=tpath, name=name, line=_line_of(node),
                       doc=self.text(node, "doc", ypath), doc_ref=_doc_ref(node.get("doc-ref", "")),
                       orig_id=str(orig) if orig is not None else None,
                       big=True if big is None else big, bit_big=bool(bit_big))
        tdef_big_known = big is not None
        self.types[tpath] = tdef
        self.raw_types[tpath] = node
        self.endian_known[tpath] = tdef_big_known
        enums = node.get("enums", {})
        if not isinstance(enums, dict):
            raise self.err(node, "enums", f"{ypath}/enums", "must be a mapping")
        for ename, values in enums.items():
            epath = f"{ypath}/enums/{ename}"
            if not isinstance(ename, str) or not _ID.match(ename):
                raise self.err(enums, ename, epath, "enum id must be snake_case")
            if not isinstance(values, _Map):
                raise self.err(enums, ename, epath, "must map integers to names")
            out: dict[int, str] = {}
            for k, v in values.items():
                label = v.get("id") if isinstance(v, _Map) else v
                if not isinstance(k, int) or isinstance(k, bool):
                    raise self.err(values, k, f"{epath}/{k}", "enum key must be an integer")
                if not isinstance(label, str) or not _ID.match(label):
                    raise self.err(values, k, f"{epath}/{k}", "enum name must be snake_case")
                out[k] = label
            self.enums[(*tpath, ename)] = EnumDef(path=(*tpath, ename), values=out)
        types = node.get("types", {})
        if not isinstance(types, dict):
            raise self.err(node, "types", f"{ypath}/types", "must be a mapping")
        for tname, tnode in types.items():
            sub = f"{ypath}/types/{tname}"
            if not isinstance(tname, str) or not _ID.match(tname):
                raise self.err(types, tname, sub, "type id must be snake_case")
            if not isinstance(tnode, _Map):
                raise self.err(types, tname, sub, "must be a mapping")
            self.collect(tnode, (*tpath, tname), tname, sub, big, bit_big)

    # -- name resolution (Kaitai scoping: own scope, then each enclosing one) ---------------

    def resolve(self, table: dict[tuple[str, ...], Any], scope: tuple[str, ...],
                ref: tuple[str, ...]) -> tuple[str, ...] | None:
        for depth in range(len(scope), -1, -1):
            candidate = (*scope[:depth], *ref)
            if candidate in table:
                return candidate
        return None

    # -- pass 2: fields, instances, params --------------------------------------------------

    def fill(self, tdef: TypeDef, node: _Map) -> None:
        ypath = "/".join(f"types/{p}" for p in tdef.path)
        params = node.get("params", [])
        if not isinstance(params, list):
            raise self.err(node, "params", f"{ypath}/params", "must be a list")
        for i, pnode in enumerate(params):
            ppath = f"{ypath}/params/{i}"
            if not isinstance(pnode, _Map) or not _ID.match(str(pnode.get("id", ""))):
                raise self.err(pnode if isinstance(pnode, _Map) else node, "id", ppath,
                               "param needs a snake_case id")
            ptype = str(pnode.get("type", ""))
            if _INT_TYPE.match(ptype) or _BITS_TYPE.match(ptype):
                kind = "int"
            elif ptype in ("bool", "bytes", "str"):
                kind = ptype
            else:
                raise self.err(pnode, "type", f"{ppath}/type", f"param type {ptype!r} not supported")
            tdef.params.append(Param(id=pnode["id"], ptype=kind, doc=self.text(pnode, "doc", ppath)))
        seq = node.get("seq", [])
        if not isinstance(seq, list):
            raise self.err(node, "seq", f"{ypath}/seq", "must be a list")
        seen: set[str] = {p.id for p in tdef.params}
        for i, fnode in enumerate(seq):
            fpath = f"{ypath}/seq/{i}"
            if not isinstance(fnode, _Map):
                raise self.err(seq, None, fpath, "each seq item must be a mapping")
            self.check_keys(fnode, _ATTR_KEYS, fpath)
            fid = fnode.get("id")
            if not isinstance(fid, str) or not _ID.match(fid):
                raise self.err(fnode, "id", f"{fpath}/id", "needs a snake_case id")
            if fid in seen:
                raise self.err(fnode, "id", f"{fpath}/id", f"duplicate id {fid!r}")
            seen.add(fid)
            tdef.seq.append(self.attribute(tdef, fnode, fid, fpath))
        self.check_bit_runs(tdef, ypath)
        instances = node.get("instances", {})
        if not isinstance(instances, dict):
            raise self.err(node, "instances", f"{ypath}/instances", "must be a mapping")
        for iid, inode in instances.items():
            ipath = f"{ypath}/instances/{iid}"
            if not isinstance(iid, str) or not _ID.match(iid) or iid in seen:
                raise self.err(instances, iid, ipath, "instance id must be a new snake_case id")
            if not isinstance(inode, _Map):
                raise self.err(instances, iid, ipath, "must be a mapping")
            self.check_keys(inode, _INSTANCE_KEYS, ipath)
            seen.add(iid)
            tdef.instances.append(self.instance(tdef, inode, iid, ipath))
        self.checksum(tdef, node, ypath)
        self.check_names(tdef, ypath)

    def instance(self, tdef: TypeDef, node: _Map, iid: str, ipath: str) -> Instance:
        inst = Instance(id=iid, line=_line_of(node), doc=self.text(node, "doc", ipath))
        if "value" in node:
            extra = set(node) - {"value", "doc", "doc-ref", "enum", "-orig-id", "-comment"}
            if extra:
                raise self.err(node, sorted(extra)[0], ipath, "a value instance takes only value/doc/enum")
            inst.value = self.expr(node, "value", node["value"], f"{ipath}/value")
            return inst
        if "pos" not in node:
            raise self.err(node, None, ipath, "instance needs 'value' or 'pos'")
        inst.pos = self.expr(node, "pos", node["pos"], f"{ipath}/pos")
        inst.attr = self.attribute(tdef, node, iid, ipath)
        return inst

    def attribute(self, tdef: TypeDef, node: _Map, fid: str, fpath: str) -> Attribute:
        attr = Attribute(id=fid, kind="bytes", line=_line_of(node),
                         doc=self.text(node, "doc", fpath),
                         doc_ref=_doc_ref(node.get("doc-ref", "")))
        if "-orig-id" in node:
            attr.orig_id = str(node["-orig-id"])
        ftype = node.get("type")
        if "size" in node:
            attr.size = self.expr(node, "size", node["size"], f"{fpath}/size")
        if node.get("size-eos"):
            attr.size_eos = True
        if "contents" in node:
            attr.contents = self.contents(node, fpath)
            if ftype is not None or attr.size is not None:
                raise self.err(node, "contents", f"{fpath}/contents", "contents excludes type and size")
        elif ftype is None:
            if attr.size is None and not attr.size_eos:
                raise self.err(node, None, fpath, "a byte array needs size or size-eos")
        elif not isinstance(ftype, str):
            raise self.err(node, "type", f"{fpath}/type", "switch-on types are not supported")
        else:
            self.typed(tdef, node, attr, ftype, fpath)
        if "enum" in node:
            if attr.kind not in ("int", "bits"):
                raise self.err(node, "enum", f"{fpath}/enum", "enum needs an integer type")
            ref = tuple(str(node["enum"]).split("::"))
            found = self.resolve(self.enums, tdef.path, ref)
            if found is None:
                raise self.err(node, "enum", f"{fpath}/enum", f"unknown enum {node['enum']!r}")
            attr.enum = found
        if "repeat" in node:
            rep = node["repeat"]
            if rep == "expr":
                if "repeat-expr" not in node:
                    raise self.err(node, "repeat", f"{fpath}/repeat", "repeat: expr needs repeat-expr")
                attr.repeat = "expr"
                attr.repeat_expr = self.expr(node, "repeat-expr", node["repeat-expr"],
                                             f"{fpath}/repeat-expr")
            elif rep == "eos":
                attr.repeat = "eos"
            else:
                raise self.err(node, "repeat", f"{fpath}/repeat", "only 'expr' and 'eos' are supported")
        elif "repeat-expr" in node:
            raise self.err(node, "repeat-expr", f"{fpath}/repeat-expr", "needs repeat: expr")
        if "if" in node:
            attr.cond = self.expr(node, "if", node["if"], f"{fpath}/if")
        if "valid" in node:
            attr.valid = self.valid(tdef, node, fpath)
        attr.default = self.default(node, attr, fpath)
        for key in ("terminator", "pad-right", "include", "consume"):
            if key in node and attr.kind != "strz" and key != "pad-right":
                raise self.err(node, key, f"{fpath}/{key}", "only for strz")
        if node.get("terminator", 0) != 0 or node.get("include", False) or \
                not node.get("consume", True):
            raise self.err(node, "terminator", fpath, "only the default strz terminator is supported")
        return attr

    def typed(self, tdef: TypeDef, node: _Map, attr: Attribute, ftype: str, fpath: str) -> None:
        m = _INT_TYPE.match(ftype)
        if m:
            attr.kind, attr.width, attr.signed = "int", int(m.group(2)), m.group(1) == "s"
            attr.big = self.byte_order(tdef, node, m.group(3), attr.width, fpath)
            self.no_size(node, fpath)
            return
        m = _FLOAT_TYPE.match(ftype)
        if m:
            attr.kind, attr.width = "float", int(m.group(1))
            attr.big = self.byte_order(tdef, node, m.group(2), 2, fpath)
            self.no_size(node, fpath)
            return
        m = _BITS_TYPE.match(ftype)
        if m:
            attr.kind, attr.width = "bits", int(m.group(1))
            attr.big = tdef.bit_big if m.group(2) is None else m.group(2) == "be"
            if not 1 <= attr.width <= 64:
                raise self.err(node, "type", f"{fpath}/type", "bit fields are 1 to 64 bits")
            self.no_size(node, fpath)
            return
        if ftype in ("str", "strz"):
            attr.kind = ftype  # type: ignore[assignment]
            enc = node.get("encoding", self.encoding)
            if enc is None:
                raise self.err(node, "type", f"{fpath}/encoding", "strings need an encoding")
            attr.encoding = self.check_encoding(node, "encoding", f"{fpath}/encoding", enc)
            if attr.size is None and not attr.size_eos:
                raise self.err(node, "type", fpath, "strings need size or size-eos in our subset")
            return
        m = _USER_TYPE.match(ftype)
        if not m:
            raise self.err(node, "type", f"{fpath}/type", f"unknown type {ftype!r}")
        ref = tuple(m.group(1).split("::"))
        found = self.resolve(self.types, tdef.path, ref)
        if found is None:
            raise self.err(node, "type", f"{fpath}/type", f"unknown type {ftype!r}")
        attr.kind, attr.type_path = "struct", found
        if m.group(2) is not None:
            attr.args = [self.expr(node, "type", a.strip(), f"{fpath}/type")
                         for a in _split_args(m.group(2))]
        want = len(self.types[found].params) if found in self.types else 0
        declared = self.raw_types[found].get("params", [])
        want = len(declared) if isinstance(declared, list) else want
        if len(attr.args) != want:
            raise self.err(node, "type", f"{fpath}/type",
                           f"type {ftype!r} takes {want} argument(s), {len(attr.args)} given")

    def byte_order(self, tdef: TypeDef, node: _Map, suffix: str | None, width: int,
                   fpath: str) -> bool:
        if suffix is not None:
            return suffix == "be"
        if width > 1 and not self.endian_known.get(tdef.path, False):
            raise self.err(node, "type", f"{fpath}/type",
                           "no endianness: give meta/endian or a le/be suffix")
        return tdef.big

    def no_size(self, node: _Map, fpath: str) -> None:
        if "size" in node or "size-eos" in node:
            raise self.err(node, "size", f"{fpath}/size", "size is not allowed on numeric types")

    def contents(self, node: _Map, fpath: str) -> bytes:
        value = node["contents"]
        items = value if isinstance(value, list) else [value]
        out = bytearray()
        for item in items:
            if isinstance(item, str):
                out += item.encode("utf-8")
            elif isinstance(item, int) and 0 <= item <= 255:
                out.append(item)
            else:
                raise self.err(node, "contents", f"{fpath}/contents", f"bad contents item {item!r}")
        return bytes(out)

    def default(self, node: _Map, attr: Attribute, fpath: str) -> int | None:
        """The value new() gives a single integer field: `-default: <int expr>` (a constant the
        spec documents), else the value its `valid` fixes (eq, or the first of any-of)."""
        single_int = attr.kind in ("int", "bits") and attr.repeat is None and attr.cond is None
        if "-default" in node:
            dpath = f"{fpath}/-default"
            if not single_int:
                raise self.err(node, "-default", dpath, "only for a single integer field")
            value = const_int(self.expr(node, "-default", node["-default"], dpath))
            if value is None:
                raise self.err(node, "-default", dpath, "must be a constant integer")
            return value
        v = attr.valid
        if v is None or not single_int:
            return None
        if v.eq is not None:
            return const_int(v.eq)
        if v.any_of:
            return const_int(v.any_of[0])
        return None  # a range (min/max/expr) names no value

    def valid(self, tdef: TypeDef, node: _Map, fpath: str) -> Valid:
        value = node["valid"]
        vpath = f"{fpath}/valid"
        if not isinstance(value, _Map):
            return Valid(eq=self.expr(node, "valid", value, vpath))
        self.check_keys(value, _VALID_KEYS, vpath)
        out = Valid()
        if "eq" in value:
            out.eq = self.expr(value, "eq", value["eq"], f"{vpath}/eq")
        if "min" in value:
            out.min = self.expr(value, "min", value["min"], f"{vpath}/min")
        if "max" in value:
            out.max = self.expr(value, "max", value["max"], f"{vpath}/max")
        if "expr" in value:
            out.expr = self.expr(value, "expr", value["expr"], f"{vpath}/expr")
        if "any-of" in value:
            items = value["any-of"]
            if not isinstance(items, list):
                raise self.err(value, "any-of", f"{vpath}/any-of", "must be a list")
            out.any_of = [self.expr(value, "any-of", v, f"{vpath}/any-of") for v in items]
        return out

    def check_bit_runs(self, tdef: TypeDef, ypath: str) -> None:
        run = 0
        last: Attribute | None = None
        for attr in tdef.seq:
            if attr.kind == "bits":
                if attr.repeat or attr.cond is not None:
                    raise self.ctx.error(attr.line, f"{ypath}/seq/{attr.id}",
                                         "a bit field cannot repeat or be conditional")
                run += attr.width
                last = attr
                continue
            if run % 8:
                raise self.ctx.error(attr.line, f"{ypath}/seq/{attr.id}",
                                     "a run of bit fields must end on a byte boundary")
            run = 0
        if run % 8 and last is not None:
            raise self.ctx.error(last.line, f"{ypath}/seq/{last.id}",
                                 "a run of bit fields must end on a byte boundary")
        bits = [a for a in tdef.seq if a.kind == "bits"]
        if bits and len({a.big for a in bits}) > 1:
            raise self.ctx.error(bits[0].line, f"{ypath}/seq/{bits[0].id}",
                                 "mixed bit endianness in one type is not supported")

    def checksum(self, tdef: TypeDef, node: _Map, ypath: str) -> None:
        spec = node.get("-checksum")
        if spec is None:
            return
        cpath = f"{ypath}/-checksum"
        if not isinstance(spec, _Map):
            raise self.err(node, "-checksum", cpath, "must be a mapping")
        algo = spec.get("algorithm")
        if algo not in CHECKSUM_ALGORITHMS:
            raise self.err(spec, "algorithm", f"{cpath}/algorithm",
                           f"one of {', '.join(CHECKSUM_ALGORITHMS)}")
        fname = spec.get("field")
        field = next((a for a in tdef.seq if a.id == fname), None)
        if field is None or field.kind != "int" or field.repeat or field.cond is not None:
            raise self.err(spec, "field", f"{cpath}/field", "must name a plain integer seq field")
        covers = spec.get("covers", "whole")
        tdef.checksum = Checksum(
            algorithm=str(algo), field=str(fname),
            covers=None if covers == "whole" else self.expr(spec, "covers", covers, f"{cpath}/covers"))

    def check_names(self, tdef: TypeDef, ypath: str) -> None:
        """Every name and enum literal in every expression of the type must exist."""
        known = {a.id for a in tdef.seq} | {i.id for i in tdef.instances}
        known |= {p.id for p in tdef.params} | {"_parent", "_root", "_io", "_index", "_"}
        located: list[tuple[int, str, Node]] = []
        for a in tdef.seq:
            located += [(a.line, f"{ypath}/seq/{a.id}", n) for n in _attr_exprs(a)]
        for inst in tdef.instances:
            where = (inst.line, f"{ypath}/instances/{inst.id}")
            located += [(*where, n) for n in (inst.value, inst.pos) if n is not None]
            if inst.attr is not None:
                located += [(*where, n) for n in _attr_exprs(inst.attr)]
        for line, path, expr in located:
            for n in walk(expr):
                if isinstance(n, Name) and n.name not in known:
                    raise self.ctx.error(line, path, f"expression uses unknown name {n.name!r}")
                if isinstance(n, EnumLit):
                    found = self.resolve(self.enums, tdef.path, n.enum)
                    if found is None or n.member not in self.enums[found].values.values():
                        raise self.ctx.error(line, path, "unknown enum member "
                                             f"{'::'.join(n.enum)}::{n.member}")


def _attr_exprs(a: Attribute) -> list[Node]:
    """Every expression an attribute carries (size, count, condition, arguments, rules)."""
    out = [n for n in (a.size, a.repeat_expr, a.cond) if n is not None] + list(a.args)
    if a.valid is not None:
        v = a.valid
        out += [n for n in (v.eq, v.min, v.max, v.expr) if n is not None] + list(v.any_of or [])
    return out


def _doc_ref(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch in "(["
        depth -= ch in ")]"
        cur += ch
    if cur.strip():
        out.append(cur)
    return out
