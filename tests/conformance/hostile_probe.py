"""Run by test_hostile in a child process with an address-space limit: every image named on
stdin (one path per line) goes through the API and the read-only commands; one JSON line per
image on stdout says how it went: "ok", the project's error class, or (a failure) another
exception, a MemoryError or a time-out, with the traceback."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

LIMIT = 2 << 30  # address space
SECONDS = 20  # per image


class TimeLimit(Exception):
    pass


def expire(signum: int, frame: FrameType | None) -> None:
    raise TimeLimit(f"took longer than {SECONDS} s")


def exercise(path: Path, fmt: str) -> None:
    import diskspec.runtime as ds
    from diskspec.runtime.cli import main as cli
    from diskspec.runtime.errors import DiskspecError

    def step(run: Callable[[], None]) -> None:
        with contextlib.suppress(DiskspecError):  # the project's errors are the right outcome
            run()

    def read_all() -> None:
        with ds.open(path, format=fmt, backing=False) as image:
            size = min(image.size, 64 << 20)
            pos = 0
            while pos < size:
                image.seek(pos)
                image.read(1 << 20)
                pos += 1 << 20
            image.seek(max(0, image.size - 4096))
            image.read(4096)
            for n, _ in enumerate(image.extents()):
                if n > 1_000_000:
                    raise AssertionError("more than a million extents from a small file")
            image.engine.info()
            if image.engine.capabilities.check:
                image.engine.check()

    def write_copy() -> None:
        copy = path.with_name(path.name + ".rw")
        shutil.copyfile(path, copy)
        try:
            with ds.open(copy, "r+", format=fmt, backing=False) as image:
                image.seek(0)
                image.write(b"w" * 4096)
                image.seek(max(0, image.size - 3000))
                image.write(b"v" * min(3000, image.size))
                if image.engine.capabilities.repair:
                    image.engine.check(repair=True)
        finally:
            copy.unlink(missing_ok=True)

    step(read_all)
    step(write_copy)
    step(lambda: ds.open(path).close())  # probed
    for argv in (["info", "-f", fmt, str(path)], ["info", str(path)], ["check", "-f", fmt, str(path)],
                 ["map", "--output=json", "-f", fmt, str(path)], ["dissect", str(path)],
                 ["dissect", "--output=json", str(path)]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main(argv)
        if "Traceback" in err.getvalue():
            raise AssertionError(f"{' '.join(argv[:-1])}: {err.getvalue()[-1500:]}")


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    signal.signal(signal.SIGALRM, expire)
    for line in sys.stdin:
        name, fmt = line.rstrip("\n").rsplit("\t", 1)
        signal.alarm(SECONDS)
        try:
            exercise(Path(name), fmt)
            outcome = {"file": name, "ok": True}
        except BaseException as exc:  # noqa: BLE001 - reporting every failure is the point
            outcome = {"file": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                       "trace": traceback.format_exc()[-3000:]}
        finally:
            signal.alarm(0)
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
