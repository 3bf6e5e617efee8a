"""Raw-shadow workloads shared by the engine suites: every write goes to the image and to a
bytearray; reads, reopens and the final content must agree with the bytearray."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import diskspec.runtime as ds

Op = tuple[str, int, int, int]  # (write|read|reopen, offset, length, seed)


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def ds_read(path: Path, **kwargs: Any) -> bytes:
    with ds.open(path, **kwargs) as image:
        data = image.read()
        assert len(data) == image.size
        return data


def write_both(image: ds.Image, shadow: bytearray, offset: int, data: bytes) -> None:
    image.seek(offset)
    assert image.write(data) == len(data)
    shadow[offset : offset + len(data)] = data


def op_lists(longest: int) -> st.SearchStrategy[list[Op]]:
    """Up to 10 writes (short ones and ones up to `longest` bytes), reads and reopens."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 1 << 23),
                      st.one_of(st.integers(1, 1100), st.integers(1, longest)), st.integers(0, 1 << 30)),
            st.tuples(st.just("read"), st.integers(0, 1 << 23), st.integers(1, longest), st.just(0)),
            st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
        ),
        min_size=1, max_size=10)


def run_ops(path: Path, shadow: bytearray, workload: list[Op], **kwargs: Any) -> None:
    """Apply the workload read-write (offsets wrap around the disk), then check that the
    image reads as the shadow and that its engine's check finds it clean (open() takes
    `kwargs`)."""
    size = len(shadow)
    image = ds.open(path, "r+", **kwargs)
    try:
        for op, offset, length, seed in workload:
            offset %= size
            length = min(length, size - offset)
            if op == "write":  # one write in seven writes zeros
                data = bytes(length) if seed % 7 == 0 else random.Random(seed).randbytes(length)
                write_both(image, shadow, offset, data)
            elif op == "read":
                image.seek(offset)
                assert image.read(length) == shadow[offset : offset + length]
            else:
                image.close()
                image = ds.open(path, "r+", **kwargs)
    finally:
        image.close()
    assert sha(ds_read(path, **kwargs)) == sha(shadow)
    with ds.open(path, **kwargs) as again:
        if again.engine.capabilities.check:  # raw has nothing to check
            assert again.engine.check().clean
