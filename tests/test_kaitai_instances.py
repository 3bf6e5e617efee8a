"""The `instances` of every type (value and `pos` instances, at any depth) read the same as
the official Kaitai compiler's generated code, on every sample of tests/samples.py.

test_kaitai_oracle.py compares the seq fields; this walks the instances too: a sample parsed
from a whole file reaches the structures its root type locates with `pos` instances. Where
an instance cannot be read (a magic that does not match, a position outside the stream),
both sides must fail.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from array import array
from types import ModuleType
from typing import Any

import pytest

from .samples import MAKERS, Sample
from .test_kaitai_oracle import kaitai_modules, kaitai_parse, samples

__all__ = ["kaitai_modules", "samples"]  # the fixtures, shared with the oracle test

MAX_DEPTH = 8


def instance_names(cls: type) -> list[str]:
    """Our codecs give each `instances` entry as a property, and nothing else."""
    return [name for name, value in vars(cls).items() if isinstance(value, property)]


def read(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except Exception as exc:  # noqa: BLE001 - either side may fail in its own way
        return exc


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
    if isinstance(kaitai, bool) and not isinstance(mine, bool):
        kaitai = int(kaitai)
    if mine != kaitai or (mine is None) != (kaitai is None):
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
