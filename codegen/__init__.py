"""The generator: .ksy specs -> IR -> typed Python codecs (and construct Structs).

`generate()` renders one spec; `codegen_main()` is the `diskspec codegen` command.
Codegen never imports the runtime.
"""

from __future__ import annotations

from .generate import SPEC_DIR, generate, generated_path, stale_files, write_all
from .loader import SpecError, load_spec

__all__ = ["SPEC_DIR", "SpecError", "generate", "generated_path", "load_spec", "stale_files",
           "write_all"]
