"""diskspec's own commands: codegen, demo, dissect."""

from __future__ import annotations

from ..errors import UnsupportedFeatureError


def cmd_codegen(argv: list[str]) -> int:
    from diskspec.codegen.generate import codegen_main

    return codegen_main(argv)


def cmd_demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


def cmd_dissect(argv: list[str]) -> int:
    try:
        from .dissect import main as dissect_main
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{__package__}.dissect", f"{__package__}.dissect.cli"):
            raise
        raise UnsupportedFeatureError("dissect (the runtime.dissect module is not installed)") from None
    result: int = dissect_main(argv)
    return result


