"""An in-flight llm, http or sleep call is aborted within 1 s of a cancel."""

from __future__ import annotations

import threading
import time

import pytest

from runs.engine import CancelToken, Executor, HttpPolicy, RunCancelled, RunContext, parse_spec

from .helpers import LocalServer, chain, run_all, slow


def cancel_after(ctx: RunContext, seconds: float) -> None:
    threading.Timer(seconds, ctx.cancel.cancel, args=("user cancelled",)).start()


def assert_aborted_quickly(spec: dict, ctx: RunContext) -> None:
    cancel_after(ctx, 0.3)
    started = time.monotonic()
    with pytest.raises(RunCancelled) as info:
        run_all(spec, ctx=ctx)
    elapsed = time.monotonic() - started - 0.3
    assert elapsed < 1.0, f"abort took {elapsed:.2f}s"
    assert info.value.reason == "user cancelled"


def test_cancel_aborts_an_in_flight_scripted_llm_call() -> None:
    spec = chain(
        (
            "l",
            {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "p",
                "output": "o",
                "responses": ["r"],
                "latency_ms": 30_000,
            },
        )
    )
    assert_aborted_quickly(spec, RunContext())


def test_cancel_aborts_an_in_flight_sleep() -> None:
    spec = chain(("s", {"kind": "sleep", "seconds": 30}))
    assert_aborted_quickly(spec, RunContext(sleep_inline_max=60))


def test_cancel_aborts_an_in_flight_http_call(server: LocalServer) -> None:
    server.route("/slow", slow(10))
    spec = chain(("h", {"kind": "http", "url": server.url + "/slow", "output": "r"}))
    ctx = RunContext(http_policy=HttpPolicy(allowed_hosts=["127.0.0.1"], allow_private=True))
    assert_aborted_quickly(spec, ctx)


def test_cancel_aborts_an_in_flight_openai_call(server: LocalServer) -> None:
    server.route("/v1/chat/completions", slow(10))
    spec = chain(
        (
            "l",
            {
                "kind": "llm",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "prompt": "p",
                "output": "o",
            },
        )
    )
    ctx = RunContext(llm_config={"openai": {"base_url": server.url + "/v1", "api_key": "k"}})
    assert_aborted_quickly(spec, ctx)


def test_cancel_aborts_every_parallel_branch() -> None:
    spec = chain(("p", {"kind": "parallel", "branches": ["a", "b"]}))
    for branch in ("a", "b"):
        spec["nodes"][branch] = {
            "kind": "llm",
            "provider": "scripted",
            "prompt": "p",
            "output": branch,
            "responses": ["r"],
            "latency_ms": 30_000,
        }
    assert_aborted_quickly(spec, RunContext())


def test_cancel_is_checked_between_steps() -> None:
    ctx = RunContext()
    spec = chain(
        ("a", {"kind": "transform", "set": {"x": "1"}}),
        ("b", {"kind": "transform", "set": {"y": "2"}}),
    )
    steps = Executor(parse_spec(spec), ctx).run({})
    first = next(steps)
    assert first.node == "a"
    ctx.cancel.cancel("stop")
    with pytest.raises(RunCancelled):
        next(steps)


def test_cancel_token_children_and_callbacks() -> None:
    parent = CancelToken()
    child = parent.child()
    other = parent.child()
    other.cancel("alone")
    assert other.cancelled and not parent.cancelled and not child.cancelled
    fired: list[str] = []
    parent.on_cancel(lambda: fired.append("cb"))
    remove = parent.on_cancel(lambda: fired.append("removed"))
    remove()
    parent.cancel("stop")
    parent.cancel("again")
    assert parent.reason == "stop" and child.cancelled and child.reason == "stop"
    assert fired == ["cb"]
    assert parent.wait(0) is True
    late: list[str] = []
    parent.on_cancel(lambda: late.append("now"))
    assert late == ["now"]
    with pytest.raises(RunCancelled):
        child.raise_if_cancelled()
