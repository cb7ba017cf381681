from __future__ import annotations

import threading
import time

import pytest

from runs.engine import CancelToken, RunCancelled
from runs.engine.threads import call_with_cancel, spawn


def test_call_with_cancel_returns_the_result_or_raises_the_error() -> None:
    assert call_with_cancel(lambda: 42, CancelToken()) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_cancel(lambda: 1 / 0, CancelToken())


def test_call_with_cancel_gives_up_on_timeout_and_calls_on_abandon() -> None:
    abandoned = threading.Event()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        call_with_cancel(lambda: time.sleep(2), CancelToken(), 0.1, on_abandon=abandoned.set)
    assert time.monotonic() - started < 1 and abandoned.is_set()


def test_call_with_cancel_raises_run_cancelled_at_once() -> None:
    token = CancelToken()
    threading.Timer(0.1, token.cancel, args=("stop",)).start()
    started = time.monotonic()
    with pytest.raises(RunCancelled) as info:
        call_with_cancel(lambda: time.sleep(3), token)
    assert info.value.reason == "stop" and time.monotonic() - started < 1


def test_spawned_tasks_run_concurrently_and_a_failing_task_keeps_its_worker() -> None:
    spawn(lambda: 1 / 0)
    barrier = threading.Barrier(4, timeout=2)
    done = []
    for _ in range(3):
        spawn(lambda: done.append(barrier.wait()))
    barrier.wait()
    time.sleep(0.05)
    assert len(done) == 3
