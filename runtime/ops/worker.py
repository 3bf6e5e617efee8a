"""A worker thread that runs calls in the order they were submitted and hands their results
back in that order (convert's read-ahead). concurrent.futures would do, but it imports
logging and more: ~5 ms at every start of the command line, which a short convert feels."""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Worker(Generic[T]):
    """One thread; `result()` returns (or raises) the oldest submitted call's outcome."""

    def __init__(self, name: str) -> None:
        self._calls: SimpleQueue[Callable[[], T] | None] = SimpleQueue()
        self._results: SimpleQueue[tuple[bool, object]] = SimpleQueue()  # (ok, value or error)
        self._pending = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], T]) -> None:
        if self._closing:
            raise RuntimeError("worker is closed")
        self._pending += 1
        self._calls.put(call)

    def result(self) -> T:
        """The outcome of the oldest call not yet collected (waits for it to finish)."""
        if not self._pending:
            raise RuntimeError("no call pending")
        self._pending -= 1
        ok, outcome = self._results.get()
        if not ok:
            raise cast(BaseException, outcome)
        return cast(T, outcome)

    def close(self) -> None:
        """Drop the calls not started yet and wait for the running one to end."""
        self._closing = True
        self._calls.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            if self._closing:
                continue
            try:
                self._results.put((True, call()))
            except BaseException as exc:  # raised in the caller by result()
                self._results.put((False, exc))
