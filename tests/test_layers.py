"""The runtime's layers, held by its imports: cli -> ops/dissect -> Image/engines -> backends ->
formats, never back; and no module imports another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

RUNTIME = ROOT / "runtime"

#: layer of each subpackage; top-level modules of runtime/ are the framework
LAYERS = {"cli": "cli", "ops": "ops", "dissect": "dissect", "engines": "engines"}

#: the package itself (the public names open/create/dissect, loaded lazily) and
#: `python -m diskspec.runtime`: above every layer
FACADE = {"diskspec.runtime", "diskspec.runtime.__main__"}

#: layer -> the layers it must never import
FORBIDDEN = {
    "facade": set(),
    "framework": {"cli", "ops", "dissect", "engines"},
    "engines": {"cli", "ops", "dissect"},
    "ops": {"cli", "engines", "dissect"},
    "dissect": {"cli", "ops"},
    "cli": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(RUNTIME).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["diskspec.runtime", *parts])


def layer_of(module: str) -> str | None:
    """The layer of a diskspec.runtime module; None for modules outside the runtime."""
    if not module.startswith("diskspec.runtime"):
        return None
    if module in FACADE:
        return "facade"
    rest = module.removeprefix("diskspec.runtime").lstrip(".").split(".")
    return LAYERS.get(rest[0], "framework") if rest[0] else "framework"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in the file."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return out


SOURCES = sorted(RUNTIME.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(RUNTIME)))
def test_imports_go_one_way(path: Path) -> None:
    own = layer_of(module_name(path))
    assert own is not None
    for target, names, line in imports(path):
        targets = [target] + [f"{target}.{n}" for n in names]  # `from . import ops` names a package
        for t in targets:
            other = layer_of(t)
            assert other not in FORBIDDEN[own], f"{path.name}:{line}: {own} imports {t} ({other})"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(RUNTIME)))
def test_no_private_names_across_modules(path: Path) -> None:
    for target, names, line in imports(path):
        if target.startswith("diskspec."):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")
                       and n != "_codec"]  # the codecs' support module, imported by name
            assert not private, f"{path.name}:{line}: imports {private} from {target}"


def test_engines_declare_their_capabilities() -> None:
    from diskspec.runtime.engine import Capabilities
    from diskspec.runtime.registry import engines

    for name, cls in engines().items():
        caps = cls.capabilities
        assert isinstance(caps, Capabilities) and caps is not Capabilities(), name
        assert caps.variants, f"{name}: no image kinds to test"
        if caps.repair:
            assert caps.check, f"{name}: repair without check"
        if caps.rebase or caps.backing_create:
            assert caps.backing, f"{name}: rebase or backing options without backing files"
        assert "size" in caps.create_options or not caps.create, f"{name}: create options lack size"
