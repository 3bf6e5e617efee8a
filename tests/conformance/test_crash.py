"""Crash consistency by the subset-crash model (crash.py), for every writable engine and
variant, alone and over each kind of parent; over resizes; and a proof that the model finds
a barrier removed from each engine's allocation path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from . import crash
from .formats import ALLOCATION_BARRIERS
from .kit import Case, MiB, all_cases, build, examples, standalone_cases

SIZE = 3 * MiB + 8192  # small: every crash point rebuilds the file several times


def report(failures: list[str]) -> str:
    return f"{len(failures)} crash images fail:\n" + "\n".join(failures[:25])


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_every_crash_point_opens_and_reads_old_or_new(tmp_path: Path, case: Case) -> None:
    for seed in range(examples(1, 6)):
        built = build(case, tmp_path / f"s{seed}", fill=seed, size=SIZE)
        steps = crash.random_steps(random.Random(seed), len(built.content), 4, longest=MiB + 4096)
        failures = crash.run(built, steps, subsets=examples(2, 6), seed=seed)
        assert not failures, report(failures)


RESIZABLE = [c for c in standalone_cases() if c.caps.resize]


@pytest.mark.parametrize("new_size", [2 * MiB, 5 * MiB], ids=["shrink", "grow"])
@pytest.mark.parametrize("case", RESIZABLE, ids=lambda c: c.id)
def test_every_crash_point_of_a_resize_opens_with_the_old_or_new_size(
        tmp_path: Path, case: Case, new_size: int) -> None:
    built = build(case, tmp_path / "img", fill=3, size=SIZE)
    if new_size < SIZE:  # what a shrink cuts off is zero (engines refuse to drop data)
        with built.open("r+") as image:
            image.seek(new_size)
            image.write(bytes(image.size - new_size))
    failures = crash.run(built, [("resize", new_size, b"")], subsets=examples(3, 8))
    assert not failures, report(failures)


BARRIER_CASES = [c for c in all_cases()
                 if c.format in ALLOCATION_BARRIERS and c.parent is not None
                 and c.parent.format == c.format]


def test_every_engine_with_allocation_declares_its_barrier() -> None:
    """An engine that maps blocks (not raw's identity map) names its allocation barrier, so
    that the proof below covers it."""
    writable = {c.format for c in standalone_cases() if not c.caps.identity_map}
    assert writable <= set(ALLOCATION_BARRIERS)
    assert {c.format for c in BARRIER_CASES} == set(ALLOCATION_BARRIERS)


@pytest.mark.parametrize("case", BARRIER_CASES, ids=lambda c: c.id)
def test_the_model_finds_a_removed_allocation_barrier(tmp_path: Path, case: Case) -> None:
    """With the barrier between new data and the table entry that points at it patched out,
    some crash image reads neither old nor new data: the kit must fail."""
    engine, caller = ALLOCATION_BARRIERS[case.format]
    built = build(case, tmp_path / "img", size=SIZE)
    # whole new blocks over a parent full of data: a table entry without its data shows
    steps: list[crash.Step] = [("write", 0, random.Random(1).randbytes(2 * MiB))]
    with crash.barrier_removed(engine, caller):
        failures = crash.run(built, steps, subsets=4)
    assert failures, f"no crash image of {case.id} shows the missing barrier"
    assert any("neither" in f or "changed" in f or "Error" in f for f in failures)
