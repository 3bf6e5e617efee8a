"""The `diskspec` command line (also `python -m diskspec.runtime`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: diskspec COMMAND [ARGS...]

commands:
  codegen [--check] [SPEC...]   regenerate formats/*.py from formats/*.ksy
  demo                          build a small image from the codecs and show its structures

Run `diskspec COMMAND --help` for the options of a command.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command == "codegen":
        from diskspec.codegen.generate import codegen_main

        return codegen_main(rest)
    if command == "demo":
        from .demo import main as demo_main

        return demo_main()
    print(f"diskspec: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
