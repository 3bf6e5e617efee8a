"""`diskspec dissect`, the forensic view: every structure of an image in file order.

    from diskspec.runtime.dissect import dissect
    tree = dissect("disk.vhdx")            # a Node; never writes to the file
    for path, node in tree.walk():
        print(path, hex(node.offset), node.size, node.damage)

The tree is made of `Node`s (structures, regions, runs of blocks, gaps) with `Field`s
(from the generated field tables), `Verdict`s (checksums: stored vs computed) and damage
notes. `render.write_json` writes it as the JSON document described in SCHEMA.md;
`cli.main` is the `diskspec dissect` command.

The package itself is callable too (`diskspec.runtime.dissect(path)` works whether the
runtime re-exports the function or this module).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .core import detect, dissect
from .model import Field, Node, Table, Verdict
from .options import Options

__all__ = ["Field", "Node", "Options", "Table", "Verdict", "detect", "dissect"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        return dissect(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
