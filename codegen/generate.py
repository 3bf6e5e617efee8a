"""Turn specs into modules on disk, and tell which generated modules are stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .loader import SpecError, load_spec
from .pyrender import render_module

SPEC_DIR = Path(__file__).resolve().parent.parent / "formats"


def generated_path(spec_path: Path) -> Path:
    """formats/vhd.ksy -> formats/vhd.py (the module sits next to its spec)."""
    return spec_path.with_suffix(".py")


def generate(spec_path: str | Path) -> str:
    """The source of the module generated from one spec (deterministic)."""
    return render_module(load_spec(spec_path))


def _specs(paths: Sequence[str]) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    return sorted(SPEC_DIR.glob("*.ksy"))


def stale_files(specs: Iterable[Path]) -> list[Path]:
    """Generated modules whose content differs from what the spec produces now."""
    out = []
    for spec in specs:
        target = generated_path(spec)
        text = generate(spec)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            out.append(target)
    return out


def write_all(specs: Iterable[Path]) -> list[Path]:
    """Regenerate; returns the files whose content changed."""
    changed = []
    for spec in specs:
        target = generated_path(spec)
        text = generate(spec)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(target)
    return changed


def codegen_main(argv: Sequence[str] | None = None) -> int:
    """`diskspec codegen [--check] [SPEC...]`: 0 ok, 1 stale (with --check), 2 bad spec."""
    parser = argparse.ArgumentParser(
        prog="diskspec codegen",
        description="Regenerate formats/*.py from formats/*.ksy (or check they are current).")
    parser.add_argument("specs", nargs="*", help="specs to process (default: every formats/*.ksy)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name each stale generated file")
    args = parser.parse_args(argv)
    specs = _specs(args.specs)
    try:
        for spec in specs:
            if not spec.is_file():
                print(f"diskspec codegen: {spec}: no such spec", file=sys.stderr)
                return 2
        if args.check:
            stale = stale_files(specs)
            for path in stale:
                print(f"stale: {path}", file=sys.stderr)
            return 1 if stale else 0
        for path in write_all(specs):
            print(f"wrote {path}")
        return 0
    except SpecError as exc:
        print(f"diskspec codegen: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(codegen_main())
