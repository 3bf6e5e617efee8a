"""Turn specs into modules on disk, and tell which generated modules are stale."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .loader import SpecError, load_spec
from .pyrender import render_module

#: the specs next to this package: the checkout's formats/ in an editable install, but the
#: installed copy in site-packages otherwise -- so the command never defaults to it (checkout())
SPEC_DIR = Path(__file__).resolve().parent.parent / "formats"

#: exit codes of `diskspec codegen` (also in its --help)
OK, STALE, BAD_SPEC, NO_CHECKOUT = 0, 1, 2, 3

EXIT_CODES = """exit codes:
  0  done: modules written (or, with --check, all current)
  1  --check only: a generated module is stale or missing (each named: "stale: PATH")
  2  a spec is missing or outside the supported subset (one line naming file:line)
  3  no diskspec checkout found from the current directory upwards (use --root DIR)"""


class NoCheckoutError(Exception):
    """No diskspec source checkout where codegen was asked to work."""


def is_checkout(directory: Path) -> bool:
    """A diskspec checkout: a pyproject.toml naming the project diskspec, and formats/*.ksy."""
    project = directory / "pyproject.toml"
    if not project.is_file() or not any((directory / "formats").glob("*.ksy")):
        return False
    try:
        text = project.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r'(?m)^name\s*=\s*"diskspec"\s*$', text) is not None


def checkout(start: Path | None = None, root: Path | None = None) -> Path:
    """The checkout codegen works on: `root` when given (it must be one), else the first
    checkout from `start` (default: the current directory) upwards."""
    if root is not None:
        if not is_checkout(root):
            raise NoCheckoutError(f"{root} is not a diskspec checkout (no pyproject.toml naming "
                                  "diskspec with formats/*.ksy)")
        return root
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if is_checkout(directory):
            return directory
    raise NoCheckoutError(f"no diskspec checkout in {here} or above (a directory with a "
                          "pyproject.toml naming diskspec and formats/*.ksy); run codegen inside "
                          "one or pass --root DIR")


def generated_path(spec_path: Path) -> Path:
    """formats/vhd.ksy -> formats/vhd.py (the module sits next to its spec)."""
    return spec_path.with_suffix(".py")


def generate(spec_path: str | Path) -> str:
    """The source of the module generated from one spec (deterministic)."""
    return render_module(load_spec(spec_path))


def _specs(paths: Sequence[str], root: Path | None) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    return sorted((checkout(root=root) / "formats").glob("*.ksy"))


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
    """`diskspec codegen [--check] [--root DIR] [SPEC...]`; exit codes in EXIT_CODES."""
    parser = argparse.ArgumentParser(
        prog="diskspec codegen",
        description="Regenerate formats/*.py from formats/*.ksy (or check they are current), in "
                    "the diskspec checkout found from the current directory upwards (never the "
                    "installed copy).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*",
                        help="specs to process (default: every formats/*.ksy of the checkout)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name each stale generated file")
    parser.add_argument("--root", metavar="DIR", type=Path,
                        help="the checkout to work on (default: found from the current directory)")
    args = parser.parse_args(argv)
    try:
        specs = _specs(args.specs, args.root)
    except NoCheckoutError as exc:
        print(f"diskspec codegen: {exc}", file=sys.stderr)
        return NO_CHECKOUT
    try:
        for spec in specs:
            if not spec.is_file():
                print(f"diskspec codegen: {spec}: no such spec", file=sys.stderr)
                return BAD_SPEC
        if args.check:
            stale = stale_files(specs)
            for path in stale:
                print(f"stale: {path}", file=sys.stderr)
            return STALE if stale else OK
        for path in write_all(specs):
            print(f"wrote {path}")
        return OK
    except SpecError as exc:
        print(f"diskspec codegen: {exc}", file=sys.stderr)
        return BAD_SPEC


if __name__ == "__main__":
    sys.exit(codegen_main())
