from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from runs.engine import NodeContext, NodeError, RunContext, register_function
from runs.engine.functions import registry
from runs.engine.runner import backoff_delay

from .helpers import chain, run_all

ATTEMPTS: list[int] = []


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("test_retry_flaky", replace=True)
    def flaky(state: dict, ctx: NodeContext) -> dict:
        ATTEMPTS.append(ctx.attempt)
        if ctx.attempt < ctx.args.get("succeed_on", 99):
            raise NodeError("flaky", f"attempt {ctx.attempt} failed")
        return {"ok": ctx.attempt}

    @register_function("test_retry_fatal", replace=True)
    def fatal(state: dict, ctx: NodeContext) -> dict:
        ATTEMPTS.append(ctx.attempt)
        raise NodeError("bad_config", "nope", fatal=True)

    @register_function("test_retry_stuck", replace=True)
    def stuck(state: dict, ctx: NodeContext) -> dict:
        # Ignores its cancel token on purpose: the timeout must not depend on cooperation.
        time.sleep(ctx.args.get("seconds", 5))
        return {"late": True}

    ATTEMPTS.clear()
    yield
    for name in ("test_retry_flaky", "test_retry_fatal", "test_retry_stuck"):
        registry.unregister(name)


def test_backoff_is_exponential_with_a_cap() -> None:
    assert [backoff_delay(a, 0.5, None) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff_delay(a, 0.5, 1.5) for a in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]


def test_retryable_errors_are_retried_until_success() -> None:
    spec = chain(
        (
            "f",
            {
                "kind": "function",
                "function": "test_retry_flaky",
                "args": {"succeed_on": 3},
                "retry": {"max_attempts": 3, "backoff": 0.01, "max_backoff": 0.015},
            },
        )
    )
    results = run_all(spec)
    assert ATTEMPTS == [1, 2, 3]
    assert results[0].status == "completed" and results[0].attempt == 3
    retrying = [data for kind, data in results[0].events if kind == "step.retrying"]
    assert [(e["attempt"], e["next_attempt"], e["delay"]) for e in retrying] == [
        (1, 2, 0.01),
        (2, 3, 0.015),
    ]
    assert retrying[0]["error"]["code"] == "flaky"


def test_node_fails_after_its_last_attempt() -> None:
    spec = chain(
        (
            "f",
            {
                "kind": "function",
                "function": "test_retry_flaky",
                "retry": {"max_attempts": 2, "backoff": 0},
            },
        )
    )
    last = run_all(spec)[-1]
    assert ATTEMPTS == [1, 2]
    assert last.attempt == 2 and last.run_error["code"] == "node_failed"
    assert last.error == {"code": "flaky", "message": "attempt 2 failed"}


def test_fatal_errors_are_not_retried() -> None:
    spec = chain(
        (
            "f",
            {
                "kind": "function",
                "function": "test_retry_fatal",
                "retry": {"max_attempts": 5, "backoff": 0},
            },
        )
    )
    last = run_all(spec)[-1]
    assert ATTEMPTS == [1]
    assert last.run_error["fatal"] is True


def test_timeout_stops_waiting_for_a_node_that_ignores_it() -> None:
    spec = chain(
        (
            "f",
            {
                "kind": "function",
                "function": "test_retry_stuck",
                "timeout": 0.2,
                "args": {"seconds": 3},
            },
        )
    )
    started = time.monotonic()
    last = run_all(spec)[-1]
    assert time.monotonic() - started < 1.5
    assert last.error["code"] == "timeout"
    assert "0.2s" in last.error["message"]


def test_timeouts_are_retryable() -> None:
    spec = chain(
        (
            "l",
            {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "p",
                "output": "o",
                "responses": ["r"],
                "latency_ms": 2000,
                "timeout": 0.1,
                "retry": {"max_attempts": 2, "backoff": 0},
            },
        )
    )
    started = time.monotonic()
    last = run_all(spec)[-1]
    assert time.monotonic() - started < 1.5
    assert last.attempt == 2 and last.error["code"] == "timeout"


def test_cancel_during_backoff_aborts_at_once() -> None:
    ctx = RunContext()
    spec = chain(
        (
            "f",
            {
                "kind": "function",
                "function": "test_retry_flaky",
                "retry": {"max_attempts": 3, "backoff": 30},
            },
        )
    )
    threading.Timer(0.2, ctx.cancel.cancel, args=("user",)).start()
    started = time.monotonic()
    from runs.engine import RunCancelled

    with pytest.raises(RunCancelled) as info:
        run_all(spec, ctx=ctx)
    assert info.value.reason == "user"
    assert time.monotonic() - started < 1.5
