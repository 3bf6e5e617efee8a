"""Hostile headers: hypothesis-driven mutations of every structure the engine parses, as
the dissect tree lays them out (every field of every structure, and the entries of tables
such as BATs): random bytes and extreme values (0, 2^31, 2^32-1, 2^63, 2^64-1, small odd
numbers), with the checksums fixed up afterwards so that the mutations reach past the
checksum tests. Each image then goes through the API and the read-only commands in a child
process with a 2 GiB address-space limit and a time limit (hostile_probe.py): the outcome
is a correct read or one of the project's errors, never another exception, a hang or a
MemoryError."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskspec.runtime.dissect import Node, dissect

from .formats import HOSTILE_INPUTS
from .kit import Built, Case, all_cases, build, examples

PROBE = Path(__file__).with_name("hostile_probe.py")
EXTREMES = [0, 1, 3, 75, 0x7FFF, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 63, (1 << 64) - 1]
# structures that are not parsed (synthetic nodes: the whole image, gaps, runs of blocks)
UNPARSED = {"image", "gap", "payload_blocks", "blocks", "data"}


def targets(tree: Node, size: int) -> list[tuple[int, int]]:
    """(offset, size) of every field of every parsed structure, and of table entries."""
    out: list[tuple[int, int]] = []
    for _, node in tree.walk():
        if node.kind in UNPARSED:
            continue
        out += [(f.offset, f.size) for f in node.fields if 0 < f.size <= 64 and f.offset + f.size <= size]
        if node.entry_format is not None:
            width = node.entry_format[0]
            count = min(node.size // width, 4096)
            out += [(node.offset + i * width, width) for i in range(0, count, max(1, count // 64))]
    return out


def fix_checksums(path: Path) -> None:
    """Store the computed value of every checksum the dissect tree verifies (twice: a fixed
    checksum may sit inside what another one covers)."""
    for _ in range(2):
        try:
            tree = dissect(path)
        except Exception:  # the probe will report it; nothing to fix up here
            return
        with open(path, "r+b") as f:
            for _, node in tree.walk():
                for v in node.verdicts:
                    if v.algorithm is None or v.ok or v.offset is None or v.covers is None:
                        continue
                    f.seek(v.covers[0])
                    data = bytearray(f.read(v.covers[1]))
                    at = v.offset - v.covers[0]
                    if v.algorithm == "crc32c":
                        data[at : at + 4] = bytes(4)
                        f.seek(v.offset)
                        f.write(crc32c.crc32c(bytes(data)).to_bytes(4, "little"))
                    elif v.algorithm == "ones-complement-sum":
                        total = sum(data[:at]) + sum(data[at + 4 :])
                        f.seek(v.offset)
                        f.write((~total & 0xFFFFFFFF).to_bytes(4, "big"))


Mutation = tuple[int, int, str, int]  # (target index, extreme index or -1, byte order, seed)


def mutate(source: Built, out: Path, spots: list[tuple[int, int]], mutations: list[Mutation],
           fix: bool) -> None:
    data = bytearray(source.path.read_bytes())
    for index, extreme, order, seed in mutations:
        offset, size = spots[index % len(spots)]
        if extreme < 0:
            value = random.Random(seed).randbytes(size)
        else:
            value = (EXTREMES[extreme] % (1 << (8 * size))).to_bytes(size, order)  # type: ignore[arg-type]
        data[offset : offset + size] = value
    out.write_bytes(data)
    if fix:
        fix_checksums(out)


MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(-1, len(EXTREMES) - 1),
                               st.sampled_from(["little", "big"]), st.integers(0, 1 << 30)),
                     min_size=1, max_size=3)


def run_probe(corpus: list[tuple[Path, str]]) -> list[dict[str, object]]:
    lines = "".join(f"{p}\t{fmt}\n" for p, fmt in corpus)
    proc = subprocess.run([sys.executable, str(PROBE)], input=lines, capture_output=True, text=True,
                          timeout=60 + 25 * len(corpus), check=False)
    assert proc.returncode == 0, f"the probe died: {proc.returncode} {proc.stderr[-3000:]}"
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(corpus), proc.stderr[-3000:]
    return results


# raw parses nothing: its every byte is guest data
PARSED = [c for c in all_cases() if not c.caps.identity_map]


@pytest.mark.parametrize("case", PARSED, ids=lambda c: c.id)
def test_mutated_structures_give_clear_errors(tmp_path: Path, case: Case) -> None:
    source = build(case, tmp_path / "src", fill=11)
    tree = dissect(source.path)
    spots = targets(tree, source.path.stat().st_size)
    assert spots, f"dissect shows no structure of {case.id}"
    corpus: list[tuple[Path, str]] = []

    @settings(max_examples=examples(12, 300), deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(mutations=MUTATIONS, fix=st.booleans())
    def collect(mutations: list[Mutation], fix: bool) -> None:
        out = tmp_path / f"m{len(corpus)}.{case.format}"
        mutate(source, out, spots, mutations, fix)
        corpus.append((out, case.format))

    collect()
    failures = [r for r in run_probe(corpus) if not r["ok"]]
    assert not failures, "\n\n".join(f"{r['file']}: {r['error']}\n{r['trace']}" for r in failures[:5])


NAMED = [(c, name, recipe) for c in PARSED for name, child, recipe in HOSTILE_INPUTS.get(c.format, [])
         if child == (c.parent is not None) and (c.parent is None or c.parent.format == c.format)
         and (child or c.variant == next(iter(c.caps.variants)))]


@pytest.mark.parametrize(("case", "name", "recipe"), NAMED, ids=[f"{c.id}-{n}" for c, n, _ in NAMED])
def test_named_hostile_inputs_give_clear_errors(tmp_path: Path, case: Case, name: str,
                                                recipe: Callable[[Path], None]) -> None:
    """The audit's minimal inputs (odd-length and surrogate strings, offsets >= 2^63, NUL in
    a name): through the same probe as the mutations."""
    source = build(case, tmp_path / "src", fill=12)
    recipe(source.path)
    (result,) = run_probe([(source.path, case.format)])
    assert result["ok"], f"{name}: {result['error']}\n{result['trace']}"
