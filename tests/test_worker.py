"""The read-ahead worker thread: results in submission order, errors raised in the caller,
close() drops what has not started."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from diskspec.runtime.ops.worker import Worker


def test_results_come_back_in_submission_order() -> None:
    def square(k: int) -> Callable[[], int]:
        return lambda: k * k

    worker: Worker[int] = Worker("test")
    try:
        for k in range(20):
            worker.submit(square(k))
        assert [worker.result() for _ in range(20)] == [k * k for k in range(20)]
    finally:
        worker.close()


def test_an_error_is_raised_by_result_and_the_worker_goes_on() -> None:
    def fail() -> int:
        raise OSError(5, "read failed")

    worker: Worker[int] = Worker("test")
    try:
        worker.submit(fail)
        worker.submit(lambda: 7)
        with pytest.raises(OSError, match="read failed"):
            worker.result()
        assert worker.result() == 7
    finally:
        worker.close()


def test_close_drops_calls_not_started_and_waits_for_the_running_one() -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def slow() -> int:
        started.set()
        release.wait(5)
        ran.append(0)
        return 0

    def record(k: int) -> Callable[[], int]:
        def call() -> int:
            ran.append(k)
            return k

        return call

    worker: Worker[int] = Worker("test")
    worker.submit(slow)
    for k in range(1, 5):
        worker.submit(record(k))
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    worker.close()
    assert ran == [0]  # the running call finished; the four queued ones never ran
    assert not worker._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(lambda: 1)


def test_result_without_a_pending_call_is_an_error_not_a_hang() -> None:
    worker: Worker[int] = Worker("test")
    try:
        with pytest.raises(RuntimeError, match="no call pending"):
            worker.result()
    finally:
        worker.close()
