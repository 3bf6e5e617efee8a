"""Seeded random workloads against a raw shadow, for every writable engine and variant,
alone and over a parent of each writable format: reads and reopens agree with the shadow,
check() is clean after, and qemu-img (where it reads the format) reads the same and finds
nothing wrong with what we wrote."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from ..shadow import Op, op_lists, run_ops
from .kit import Case, all_cases, build, examples, qemu_agrees, qemu_check, qemu_formats

# writes up to 1.3 MB: across several blocks of every engine's block sizes (512 KiB - 2 MiB)
OPS = op_lists(1_300_000)


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_random_workload_matches_the_raw_shadow(tmp_path: Path, case: Case) -> None:
    asked = []

    @settings(max_examples=examples(10, 60), deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(ops=OPS)
    def workload(ops: list[Op]) -> None:
        d = Path(tempfile.mkdtemp(dir=tmp_path))
        built = build(case, d)
        run_ops(built.path, built.content, ops, format=case.format, **built.open_kwargs)
        if qemu_agrees(built, bytes(built.content)):
            asked.append(case.id)
            qemu_check(built)
        shutil.rmtree(d)

    workload()
    if case.format in qemu_formats() and case.parent is None and case.variant == next(
            iter(case.caps.variants)):
        assert asked, f"qemu-img reads {case.format} but was never asked about {case.id}"
