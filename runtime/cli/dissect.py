"""`diskspec dissect`: the forensic view of an image file (read-only).

Exit codes (EXIT_CODES, shown by --help): 0 dissected, no problem found; 2 dissected, and
problems were found (a damage note or a failed verdict anywhere in the tree); 1 dissect could
not run (no such file, not a regular file or block device, an unknown --hexdump structure,
bad arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import sys
from collections.abc import Sequence

from ..dissect.common import Reader
from ..dissect.core import dissect
from ..dissect.model import Node
from ..dissect.options import Options
from ..dissect.render import HEXDUMP_LIMIT, hexdump_document, hexdump_lines, write_json, write_plain
from ..engine import Snapshot
from ..errors import DiskspecError
from .snapshots import SnapshotRef
from .snapshots import parse as parse_snapshot

DESCRIPTION = """\
Show every structure of a VHD, VHDX or qcow2 image in file order: offsets, sizes, every field
with the meaning of its codes, checksum verdicts (stored vs computed), both VHDX headers and
region tables and which is current, the metadata items, parent locators, log entries, a BAT
summary (qcow2: L1/L2 tables, refcount structures, snapshots, bitmaps, and a refcount verdict
in place of checksums), and the gaps no structure references (possible remnants). The file
is opened read-only; damaged images are dissected as far as they go and the damage named."""

EXIT_CODES = """exit codes:
  0  the file was dissected and no problem was found
  2  the file was dissected and problems were found: a damage note or a failed check
     anywhere in the tree (see the output, or "damaged" and "damage" in the JSON)
  1  dissect could not run (no such file, not a regular file or block device, an
     unknown --hexdump structure, bad arguments), with one line on stderr"""

#: the exit codes of a run that dissected the file
CLEAN, PROBLEMS = 0, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise DiskspecError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="diskspec dissect", description=DESCRIPTION, epilog=EXIT_CODES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the image (VHD, VHDX, qcow2; anything else is shown as raw)")
    p.add_argument("--output", choices=("human", "json"), default="human",
                   help="a readable tree (default) or JSON (schema: runtime/dissect/SCHEMA.md)")
    p.add_argument("--bat", action="store_true",
                   help="list every BAT entry (qcow2: every L1, L2, refcount table and block, "
                        "and bitmap table entry)")
    p.add_argument("--hexdump", metavar="STRUCT", action="append", default=[],
                   help="show the bytes of one structure with its field boundaries, e.g. "
                        "header1, region_table2, metadata/file_parameters, log/entry[0], bat "
                        "(a path of node names, or a name found once); may be repeated")
    p.add_argument("--hexdump-limit", metavar="BYTES", type=int, default=HEXDUMP_LIMIT,
                   help=f"bytes a hex dump shows at most (default {HEXDUMP_LIMIT})")
    p.add_argument("--brief", action="store_true", help="structures only, without their fields")
    p.add_argument("--no-gaps", action="store_true",
                   help="do not read the unreferenced ranges looking for data")
    p.add_argument("--gap-budget", metavar="BYTES", type=int, default=Options.gap_budget,
                   help="bytes of gaps read at most; larger gaps are sampled "
                        f"(default {Options.gap_budget})")
    p.add_argument("--snapshot", metavar="SNAPSHOT", type=parse_snapshot,
                   help="only that internal snapshot (qcow2): its table entry and its L1 and "
                        "L2 tables; ID_OR_NAME, or snapshot.id=ID[,snapshot.name=NAME] (as "
                        "convert -l)")
    p.add_argument("--plain", action="store_true", help="plain text even when rich is installed")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the human output: auto (default) when stdout is a terminal, "
                        "always, or never")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except DiskspecError as exc:
        print(f"diskspec dissect: {exc}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        return 0
    args = parser().parse_args(argv)
    if args.hexdump_limit <= 0 or args.gap_budget < 0:
        raise DiskspecError("--hexdump-limit and --gap-budget must be positive")
    options = Options(bat=args.bat, scan_gaps=not args.no_gaps, gap_budget=args.gap_budget)
    root = dissect(args.file, options=options)
    if args.snapshot is not None:
        root = only_snapshot(root, args.snapshot, args.file)
    code = PROBLEMS if root.all_damage() else CLEAN
    if args.hexdump:
        _hexdumps(root, args)
        return code
    out = sys.stdout
    if args.output == "json":
        write_json(root, out)
        return code
    use_rich = not args.plain and importlib.util.find_spec("rich") is not None
    if use_rich:
        from ..dissect.render import write_rich

        color = {"always": True, "never": False}.get(args.color)
        width = None if out.isatty() else max(120, shutil.get_terminal_size((160, 24)).columns)
        write_rich(root, out, brief=args.brief, color=color, width=width)
    else:
        write_plain(root, out, brief=args.brief)
    return code


#: the L2 table offset in a qcow2 L1 entry (qcow2.md: bits 9-55)
L1_OFFSET_MASK = 0x00FFFFFFFFFFFE00


def only_snapshot(root: Node, ref: SnapshotRef, path: str) -> Node:
    """The tree cut to one snapshot: the root (the file's summary), the snapshot's table
    entry, its L1 table and the L2 tables it points at. Found by the entries' id_str and
    name fields, as qemu finds a snapshot (ID first, then name)."""
    table = next((c for c in root.children if c.kind == "snapshot_table"), None)
    entries = [c for c in table.children if c.kind == "snapshot_entry"] if table else []
    if not entries:
        raise DiskspecError("Failed to load snapshot: the image has no internal snapshots")
    found = ref.find([Snapshot(id=_text(e, "id_str"), name=_text(e, "name"), disk_size=0)
                      for e in entries])
    if found is None:
        raise DiskspecError("Failed to load snapshot: Can't find snapshot")
    index = next(i for i, e in enumerate(entries) if _text(e, "id_str") == found.id)
    l1 = root.find(f"snapshot_l1[{index}]")
    kept = [entries[index]]
    if l1 is not None:
        kept.append(l1)
        if l1.size:  # dissect read it (bounded, checked): the L2 tables it names
            with Reader(path) as reader:
                raw = reader.read(l1.offset, l1.size)
            wanted = {int.from_bytes(raw[i:i + 8], "big") & L1_OFFSET_MASK
                      for i in range(0, len(raw), 8)}
            kept += [c for c in root.children if c.kind == "l2_table" and c.offset in wanted]
    cut = dataclasses.replace(root, children=kept)
    cut.summary = f"{root.summary}; snapshot {found.id!r} ({found.name!r}) only"
    return cut


def _text(node: Node, name: str) -> str:
    f = node.field(name)
    return "" if f is None else str(f.value)


def _hexdumps(root: Node, args: argparse.Namespace) -> None:
    nodes = []
    for name in args.hexdump:
        node = root.find(name)
        if node is None:
            known = ", ".join(p.split("/", 1)[1] for p, _ in root.walk() if "/" in p)
            raise DiskspecError(f"no structure {name!r} (or more than one); known: "
                                f"{known[:2000]}")
        nodes.append((name, node))
    with Reader(args.file) as reader:
        if args.output == "json":
            docs = [hexdump_document(reader, node, name, args.hexdump_limit)
                    for name, node in nodes]
            json.dump(docs[0] if len(docs) == 1 else docs, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return
        for i, (_name, node) in enumerate(nodes):
            if i:
                sys.stdout.write("\n")
            for line in hexdump_lines(reader, node, args.hexdump_limit):
                sys.stdout.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
