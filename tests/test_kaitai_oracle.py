"""Every .ksy compiles with the official Kaitai Struct compiler 0.11, and its generated parser
reads the same field values as our codecs from the same bytes: the seq fields, and the
`instances` (value and `pos` instances, at any depth) - a sample parsed from a whole file
reaches the structures its root type locates with `pos` instances."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import io
import shutil
import subprocess
import sys
from array import array
from types import ModuleType
from typing import Any

import pytest

from .conftest import FORMATS, ROOT
from .samples import MAKERS, Sample

SPECS = sorted(FORMATS.glob("*.ksy"))
KSC_MODULES = ROOT / ".cache" / "kaitai" / "node_modules" / "kaitai-struct-compiler"


@pytest.fixture(scope="session")
def kaitai_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    if shutil.which("node") is None or not KSC_MODULES.exists():
        pytest.fail("the Kaitai compiler is not installed; run tools/install-test-deps.sh")
    out_dir = tmp_path_factory.mktemp("ksc")
    proc = subprocess.run(["node", str(ROOT / "tools" / "ksc.js"), str(out_dir), *map(str, SPECS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    modules = {}
    for spec in SPECS:
        path = out_dir / f"{spec.stem}.py"
        mod_spec = importlib.util.spec_from_file_location(f"_ksc_{spec.stem}", path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        mod_spec.loader.exec_module(module)
        modules[spec.stem] = module
    return modules


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Sample]]:
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is not installed; run tools/install-test-deps.sh")
    workdir = tmp_path_factory.mktemp("samples")
    return {spec: list(maker(workdir)) for spec, maker in MAKERS.items()}


def camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def ours_plain(value: Any) -> Any:
    """Our record as plain data: dataclass -> dict of seq fields, enums -> int, arrays -> list."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: ours_plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.init}
    if isinstance(value, enum.IntEnum):
        return int(value)
    if isinstance(value, array | list):
        return [ours_plain(v) for v in value]
    return value


def kaitai_plain(value: Any, like: Any) -> Any:
    """A Kaitai object as the same plain data, reading the attributes `like` (ours) has.

    Kaitai never sets a field whose `if` is false; that reads as None, as in our records."""
    if isinstance(like, dict):
        return {name: kaitai_plain(getattr(value, name, None), sub) for name, sub in like.items()}
    if isinstance(like, list):
        return [kaitai_plain(v, s) for v, s in zip(value, like, strict=False)] + \
            ([None] * (len(value) - len(like)) if len(value) > len(like) else [])
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def kaitai_parse(module: ModuleType, spec: str, sample: Sample) -> Any:
    from kaitaistruct import KaitaiStream

    cls: Any = getattr(module, camel(spec))
    for part in sample.type_path:
        cls = getattr(cls, camel(part))
    stream = KaitaiStream(io.BytesIO(sample.data))
    stream.seek(sample.offset)
    return cls(*sample.params.values(), stream) if sample.params else cls(stream)


def test_every_spec_compiles(kaitai_modules: dict[str, ModuleType]) -> None:
    assert set(kaitai_modules) == {s.stem for s in SPECS}


def test_every_spec_has_samples() -> None:
    ids = {importlib.import_module(f"diskspec.formats.{s.stem}").SPEC_ID for s in SPECS}
    missing = sorted(ids - set(MAKERS))
    assert not missing, missing


@pytest.mark.parametrize("spec", sorted(MAKERS))
def test_same_fields_as_official_compiler(spec: str, kaitai_modules: dict[str, ModuleType],
                                          samples: dict[str, list[Sample]]) -> None:
    ours_module = importlib.import_module(f"diskspec.formats.{spec}")
    checked = 0
    for sample in samples[spec]:
        cls = ours_module.TYPES["::".join(sample.type_path)]
        ours = cls.parse(sample.data, sample.offset, **sample.params)
        theirs = kaitai_parse(kaitai_modules[spec], spec, sample)
        mine = ours_plain(ours)
        assert kaitai_plain(theirs, mine) == mine, sample.id
        if cls.SIZE:
            assert ours.build() == sample.data[sample.offset: sample.offset + cls.SIZE], sample.id
        checked += 1
    assert checked >= 3


MAX_DEPTH = 12  # records nested in records; the specs' deepest path is 6


def instance_names(cls: type) -> list[str]:
    """Our codecs give each `instances` entry as a property, and nothing else."""
    return [name for name, value in vars(cls).items() if isinstance(value, property)]


def read(obj: Any, name: str) -> Any:
    """An instance's value, or the exception reading it raised (each side fails its own way)."""
    try:
        return getattr(obj, name)
    except Exception as exc:
        return exc


def lenient_text(value: Any) -> bool:
    """A string our codecs decoded from bytes that are not valid text (lone surrogates from
    surrogatepass / surrogateescape), where Kaitai's strict decoding raises instead."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def walk(ours: Any, theirs: Any, path: str, out: list[str], depth: int = 0) -> None:
    """Append to `out` every place where our value and Kaitai's differ."""
    if dataclasses.is_dataclass(ours) and not isinstance(ours, type):
        if depth > MAX_DEPTH:
            return
        for f in dataclasses.fields(ours):
            if f.init:
                walk(getattr(ours, f.name), getattr(theirs, f.name, None), f"{path}.{f.name}", out,
                     depth + 1)
        for name in instance_names(type(ours)):
            mine, kaitai = read(ours, name), read(theirs, name)
            if isinstance(kaitai, UnicodeDecodeError) and lenient_text(mine):
                continue  # documented: our strings decode any bytes, so they round-trip
            if isinstance(mine, Exception) or isinstance(kaitai, Exception):
                if not (isinstance(mine, Exception) and isinstance(kaitai, Exception)):
                    out.append(f"{path}.{name}: ours {mine!r}, Kaitai {kaitai!r}")
                continue
            walk(mine, kaitai, f"{path}.{name}", out, depth + 1)
        return
    if isinstance(ours, array | list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            out.append(f"{path}: ours {len(ours)} items, Kaitai {theirs!r:.200}")
            return
        for k, (mine, kaitai) in enumerate(zip(ours, theirs, strict=True)):
            walk(mine, kaitai, f"{path}[{k}]", out, depth)
        return
    mine = int(ours) if isinstance(ours, enum.IntEnum) else ours
    kaitai = theirs.value if isinstance(theirs, enum.Enum) else theirs
    if mine != kaitai:  # bool == int as in kaitai_plain
        out.append(f"{path}: ours {mine!r:.200}, Kaitai {kaitai!r:.200}")


@pytest.mark.parametrize("spec", sorted(MAKERS))
def test_same_instances_as_official_compiler(spec: str, kaitai_modules: dict[str, ModuleType],
                                             samples: dict[str, list[Sample]]) -> None:
    ours_module = importlib.import_module(f"diskspec.formats.{spec}")
    problems: list[str] = []
    for sample in samples[spec]:
        cls: Any = ours_module.TYPES["::".join(sample.type_path)]
        ours = cls.parse(sample.data, sample.offset, **sample.params)
        theirs = kaitai_parse(kaitai_modules[spec], spec, sample)
        found: list[str] = []
        walk(ours, theirs, "::".join(sample.type_path) or spec, found)
        problems += [f"{sample.id}: {p}" for p in found[:5]]
    assert not problems, "\n".join(problems[:40])
