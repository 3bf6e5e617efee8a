"""Output: the JSON document (SCHEMA.md), the readable tree (rich when installed, plain text
otherwise) and hex dumps of one structure with its field boundaries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .common import Reader, printable
from .model import Field, Node, Table, Verdict

SCHEMA = "diskspec-dissect"
SCHEMA_VERSION = 1

# -- JSON ----------------------------------------------------------------------------------


def document(root: Node, table_rows: bool = True) -> dict[str, Any]:
    """The JSON document as a dict (BAT rows are materialised; write_json streams them)."""
    return _document(root, _tree(root, "", table_rows))


def _document(root: Node, tree: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "path": root.value("path"),
        "format": root.value("format"),
        "subformat": root.value("subformat"),
        "file_size": root.size,
        "virtual_size": root.value("virtual_size"),
        "damaged": bool(root.all_damage()),
        "damage": [{"path": p, "offset": n.offset, "message": m}
                   for p, n, m in root.all_damage()],
        "root": tree,
    }


@dataclass
class _Rows:
    """Stands for a table's rows in the tree until they are streamed."""

    table: Table


def _tree(node: Node, path: str, table_rows: bool | None) -> dict[str, Any]:
    """Node.to_dict, with table rows left as a marker (None) for streaming."""
    here = f"{path}/{node.name}" if path else node.name
    out = node.to_dict(path, table_rows=False)
    out["children"] = [_tree(c, here, table_rows) for c in node.children]
    if node.table is not None:
        if table_rows is None:
            out["table"]["rows"] = _Rows(node.table)
        elif table_rows:
            out["table"]["rows"] = [list(r) for r in node.table]
    return out


def write_json(root: Node, out: IO[str]) -> None:
    """The JSON document, streaming table rows (a BAT of millions of entries is never a
    list in memory)."""
    _emit(_document(root, _tree(root, "", None)), out, 0)
    out.write("\n")


def _emit(obj: Any, out: IO[str], depth: int) -> None:
    pad = "  " * (depth + 1)
    if isinstance(obj, dict):
        if not obj:
            out.write("{}")
            return
        out.write("{")
        for i, (key, value) in enumerate(obj.items()):
            out.write(("," if i else "") + "\n" + pad + json.dumps(key) + ": ")
            _emit(value, out, depth + 1)
        out.write("\n" + "  " * depth + "}")
    elif isinstance(obj, list) and any(isinstance(v, dict | list | _Rows) for v in obj):
        out.write("[")
        for i, value in enumerate(obj):
            out.write(("," if i else "") + "\n" + pad)
            _emit(value, out, depth + 1)
        out.write("\n" + "  " * depth + "]")
    elif isinstance(obj, _Rows):
        out.write("[")
        for i, row in enumerate(obj.table):
            out.write(("," if i else "") + "\n" + pad + json.dumps(list(row)))
        out.write(("\n" + "  " * depth if obj.table.count else "") + "]")
    else:
        out.write(json.dumps(obj))


# -- text ----------------------------------------------------------------------------------


def _hex(n: int, width: int) -> str:
    return f"{n:#0{width + 2}x}"


def value_text(f: Field) -> str:
    if isinstance(f.value, str) and f.meaning is None and not _is_hex(f.value):
        return f'"{f.value}"' if f.value.isprintable() else repr(f.value)
    if isinstance(f.value, int) and not isinstance(f.value, bool) and f.value > 9:
        return f"{f.value} ({f.value:#x})"
    return "null" if f.value is None else str(f.value)


def _shows(f: Field) -> bool:
    """Whether the meaning adds something to the value as printed."""
    return bool(f.meaning) and str(f.meaning) not in value_text(f)


def _is_hex(text: str) -> bool:
    body = text.removesuffix("...")
    return bool(body) and len(body) % 2 == 0 and all(c in "0123456789abcdef" for c in body)


def verdict_text(v: Verdict) -> str:
    state = "ok" if v.ok else "BAD"
    if v.algorithm is not None:
        stored = f"{v.stored:#010x}" if v.stored is not None else "?"
        computed = f"{v.computed:#010x}" if v.computed is not None else "?"
        text = f"{v.name} ({v.algorithm}) {state}: stored {stored}, computed {computed}"
        if v.detail and v.computed is None:
            text += f" ({v.detail})"
        elif v.detail and v.ok:
            text += f" ({v.detail.rstrip('; ')})"
        return text
    return f"{v.name} {state}" + (f": {v.detail}" if v.detail else "")


def node_label(node: Node, width: int) -> str:
    span = f"{_hex(node.offset, width)}+{node.size:#x}"
    kind = f" [{node.kind}]" if node.kind != node.name else ""
    return f"{span} {node.name}{kind}" + (f": {node.summary}" if node.summary else "")


def field_line(f: Field, width: int, name_width: int) -> str:
    bits = f" bits {f.bits[0]}+{f.bits[1]}" if f.bits else ""
    at = _hex(f.offset, width) if f.size else " " * (width + 2)
    meaning = f"  ({f.meaning})" if _shows(f) else ""
    return f"{at} {f.name:<{name_width}} = {value_text(f)}{meaning}{bits}"


def _width(root: Node) -> int:
    return max(6, len(f"{root.size:x}"))


def _cell(column: str, v: Any) -> str:
    if v is None:
        return "-"
    if column == "file_offset" and isinstance(v, int) and not isinstance(v, bool):
        return f"{v:#x}"
    return str(v)


def _table_lines(table: Table, limit: int | None) -> Iterator[str]:
    """Aligned rows (widths taken from the first thousand)."""
    cols = table.columns
    sample = [[_cell(c, v) for c, v in zip(cols, row, strict=True)]
              for _, row in zip(range(1000), table, strict=False)]
    widths = [max([len(c)] + [len(r[i]) for r in sample]) for i, c in enumerate(cols)]
    yield "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()
    for i, row in enumerate(table):
        if limit is not None and i >= limit:
            yield f"... {table.count - limit} more rows"
            return
        cells = [_cell(c, v) for c, v in zip(cols, row, strict=True)]
        yield "  ".join(x.rjust(w) if x[:1].isdigit() or x == "-" else x.ljust(w)
                        for x, w in zip(cells, widths, strict=True)).rstrip()


def write_plain(root: Node, out: IO[str], brief: bool = False) -> None:
    width = _width(root)
    out.write(f"{root.name}: {root.summary}\n")
    for f in root.fields:
        if not brief:
            out.write(f"  {f.name}: {value_text(f)}" + (f" ({f.meaning})" if _shows(f) else "")
                      + "\n")
    for note in root.notes:
        out.write(f"  note: {note}\n")
    for d in root.damage:
        out.write(f"  DAMAGE: {d}\n")
    for i, child in enumerate(root.children):
        _plain_node(child, out, "", i == len(root.children) - 1, width, brief)
    damage = root.all_damage()
    if damage:
        out.write(f"\n{len(damage)} problem(s):\n")
        for path, node, message in damage:
            out.write(f"  {path} @ {node.offset:#x}: {message}\n")


def _plain_node(node: Node, out: IO[str], prefix: str, last: bool, width: int,
                brief: bool) -> None:
    out.write(prefix + ("└── " if last else "├── ") + node_label(node, width) + "\n")
    inner = prefix + ("    " if last else "│   ")
    for v in node.verdicts:
        out.write(inner + "  " + ("✓ " if v.ok else "✗ ") + verdict_text(v) + "\n")
    for d in node.damage:
        if not any(d.startswith(f"{v.name} bad") for v in node.verdicts):
            out.write(inner + "  DAMAGE: " + d + "\n")
    for n in node.notes:
        out.write(inner + "  note: " + n + "\n")
    if not brief:
        name_width = max((len(f.name) for f in node.fields), default=0)
        for f in node.fields:
            out.write(inner + "  " + field_line(f, width, name_width) + "\n")
        if node.table is not None:
            for line in _table_lines(node.table, None):
                out.write(inner + "  " + line + "\n")
    for i, child in enumerate(node.children):
        _plain_node(child, out, inner, i == len(node.children) - 1, width, brief)


def write_rich(root: Node, out: IO[str], brief: bool = False, color: bool | None = None,
               width: int | None = None) -> None:
    from rich.console import Console, Group
    from rich.markup import escape
    from rich.table import Table as RichTable
    from rich.text import Text
    from rich.tree import Tree

    hexw = _width(root)

    def label(node: Node, path: str) -> Any:
        text = Text()
        text.append(f"{_hex(node.offset, hexw)}+{node.size:#x} ", style="cyan")
        text.append(node.name, style="bold red" if node.damage else "bold")
        if node.kind != node.name:
            text.append(f" [{node.kind}]", style="dim")
        if node.summary:
            text.append(f": {node.summary}")
        parts: list[Any] = [text]
        for v in node.verdicts:
            parts.append(Text(("✓ " if v.ok else "✗ ") + verdict_text(v),
                              style="green" if v.ok else "bold red"))
        for d in node.damage:
            if not any(d.startswith(f"{v.name} bad") for v in node.verdicts):
                parts.append(Text("DAMAGE: " + d, style="bold red"))
        for n in node.notes:
            parts.append(Text("note: " + n, style="yellow"))
        if not brief and node.fields:
            grid = RichTable.grid(padding=(0, 1))
            for _ in range(4):
                grid.add_column()
            for f in node.fields:
                meaning = f.meaning if f.meaning and _shows(f) else ""
                if f.bits:
                    meaning = (meaning + " " if meaning else "") + f"[bits {f.bits[0]}+{f.bits[1]}]"
                grid.add_row(Text(_hex(f.offset, hexw) if f.size else "", style="cyan"),
                             Text(f.name, style="magenta"), Text("= " + value_text(f)),
                             Text(meaning, style="dim"))
            parts.append(grid)
        if not brief and node.table is not None:
            tables.append((node, path))
            parts.append(Text(f"{node.table.count} entries: listed after the tree", style="dim"))
        return Group(*parts)

    tables: list[tuple[Node, str]] = []

    def build(tree: Tree, node: Node, parent: str) -> None:
        here = f"{parent}/{node.name}"
        branch = tree.add(label(node, here))
        for child in node.children:
            build(branch, child, here)

    title = Text(f"{root.name}: ", style="bold")
    title.append(root.summary, style="bold red" if root.all_damage() else "bold green")
    head: list[Any] = [title]
    if not brief:
        for f in root.fields:
            head.append(Text(f"  {f.name}: {value_text(f)}"
                             + (f" ({f.meaning})" if _shows(f) else ""), style="dim"))
    for n in root.notes:
        head.append(Text("  note: " + n, style="yellow"))
    for d in root.damage:
        head.append(Text("  DAMAGE: " + d, style="bold red"))
    tree = Tree(Group(*head), guide_style="dim")
    for child in root.children:
        build(tree, child, root.name)
    console = Console(file=out, force_terminal=color, no_color=color is False,
                      width=width, highlight=False, soft_wrap=False)
    console.print(tree)
    for node, where in tables:  # streamed as plain lines: a BAT may have millions of rows
        assert node.table is not None
        console.print(Text(f"\n{where}: {node.table.count} entries", style="bold"))
        console.file.flush()
        for line in _table_lines(node.table, None):
            out.write(line + "\n")
    damage = root.all_damage()
    if damage:
        console.print(Text(f"\n{len(damage)} problem(s):", style="bold red"))
        for path, node, message in damage:
            console.print(f"  {escape(path)} @ {node.offset:#x}: {escape(message)}",
                          style="red", markup=True)


# -- hex dump ------------------------------------------------------------------------------

#: bytes shown at most by a hex dump unless asked for more
HEXDUMP_LIMIT = 64 * 1024


@dataclass
class Segment:
    """A piece of a structure's bytes for --hexdump, with its field boundaries."""

    name: str
    offset: int
    size: int
    fields: list[Field]
    label: Callable[[bytes], str] | None = None  # names the segment from its bytes


def _entry_segments(node: Node, fmt: tuple[int, Callable[[int, bytes], str]], limit: int
                    ) -> list[Segment]:
    size, label = fmt
    out = []
    for i in range(min(node.size, limit) // size):
        out.append(Segment(f"[{i}]", node.offset + i * size, size, [],
                           lambda raw, i=i: label(i, raw)))  # type: ignore[misc]
    return out


def segments(node: Node, limit: int = HEXDUMP_LIMIT) -> list[Segment]:
    """The node's byte range cut at field boundaries: its fields and those of its
    descendants (prefixed with their names), bit fields of one group merged, bytes no
    field covers as "(unlabelled)"."""
    rows: list[tuple[int, int, str, Field]] = []

    def collect(n: Node, prefix: str) -> None:
        for f in n.fields:
            if f.size > 0 and node.offset <= f.offset and f.offset + f.size <= node.end:
                rows.append((f.offset, f.size, prefix + f.name, f))
        for c in n.children:
            collect(c, f"{prefix}{c.name}.")

    collect(node, "")
    if not rows and node.entry_format is not None:
        return _entry_segments(node, node.entry_format, limit)
    rows.sort(key=lambda r: (r[0], -r[1]))
    out: list[Segment] = []
    pos = node.offset
    for at, size, name, f in rows:
        if out and out[-1].offset == at and out[-1].size == size:
            if f.bits is not None:
                out[-1].fields.append(f)
                if len(out[-1].fields) == 2:  # a group of bit fields: name the group
                    out[-1].name = out[-1].name.rsplit(".", 1)[0] + "." if "." in \
                        out[-1].name else ""
                    out[-1].name += "(bit fields)"
            continue
        if at < pos:
            continue  # overlaps a field already placed (a derived view of the same bytes)
        if at > pos:
            out.append(Segment("(unlabelled)", pos, at - pos, []))
        out.append(Segment(name, at, size, [f]))
        pos = at + size
    if pos < node.end:
        out.append(Segment("(unlabelled)", pos, node.end - pos, []))
    return out


def hexdump_lines(reader: Reader, node: Node, limit: int = HEXDUMP_LIMIT) -> Iterator[str]:
    """`hexdump -C`-like lines, a new line at every field boundary, the field's name on its
    first line (bit fields listed under their group); identical lines inside a field
    collapse to "*"."""
    width = max(6, len(f"{reader.size:x}"))
    segs = segments(node, limit)
    name_width = min(40, max((len(s.name) for s in segs), default=8))
    if any(s.label is not None for s in segs):
        name_width = 40
    yield (f"{node.name} [{node.kind}] at {node.offset:#x}, {node.size} bytes"
           + (f" (first {limit} shown)" if node.size > limit else ""))
    shown = 0
    blank = " " * (width + 2)
    for seg in segs:
        if shown >= limit:
            break
        n = min(seg.size, limit - shown)
        data = reader.read(seg.offset, n)
        if len(data) < n:
            n = len(data)
        prev: bytes | None = None
        starred = False
        for i in range(0, n, 16):
            line = data[i : i + 16]
            if i and line == prev and i + 16 < n:
                if not starred:
                    yield f"{blank}  {'':<{name_width}}  *"
                    starred = True
                continue
            starred = False
            prev = line
            name = seg.name if i == 0 else ""
            if i == 0 and seg.label is not None:
                name = seg.label(data)
            if len(name) > name_width:
                name = name[: name_width - 1] + "…"
            hexpart = " ".join(f"{b:02x}" for b in line)
            yield (f"{_hex(seg.offset + i, width)}  {name:<{name_width}}  {hexpart:<47}  "
                   f"|{printable(line)}|")
        if len(seg.fields) > 1 or (seg.fields and seg.fields[0].bits is not None):
            for f in seg.fields:
                assert f.bits is not None
                shift, bits = f.bits
                yield (f"{blank}    bits {shift}-{shift + bits - 1:<3} {f.name} = "
                       f"{value_text(f)}" + (f" ({f.meaning})" if _shows(f) else ""))
        if len(data) < min(seg.size, limit - shown):
            yield f"{_hex(seg.offset + n, width)}  (the file ends here)"
            return
        shown += n
    if node.size > shown:
        yield f"... {node.size - shown} more bytes not shown"


def hexdump_document(reader: Reader, node: Node, path: str, limit: int = HEXDUMP_LIMIT
                     ) -> dict[str, Any]:
    segs = []
    shown = 0
    for seg in segments(node, limit):
        if shown >= limit:
            break
        data = reader.read(seg.offset, min(seg.size, limit - shown))
        name = seg.label(data) if seg.label is not None else seg.name
        segs.append({"name": name, "offset": seg.offset, "size": seg.size,
                     "fields": [f.to_dict() for f in seg.fields],
                     "hex": data.hex(), "truncated": len(data) < seg.size})
        shown += len(data)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "hexdump": {
        "path": path, "kind": node.kind, "offset": node.offset, "size": node.size,
        "segments": segs}}
