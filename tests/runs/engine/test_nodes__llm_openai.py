"""The openai provider against a local OpenAI-compatible server streaming SSE."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from runs.engine import RunContext
from runs.engine.pricing import DEFAULT_PRICES, cost_usd

from .helpers import LocalServer, chain, run_all, send


def sse(pieces: list[str], usage: dict | None) -> bytes:
    chunks = [
        {
            "id": "c1",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"role": "assistant"}}],
        }
    ]
    chunks += [{"id": "c1", "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append({"id": "c1", "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def streaming(
    pieces: list[str], usage: dict | None = None
) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(h: BaseHTTPRequestHandler) -> None:
        send(h, 200, sse(pieces, usage), "text/event-stream")

    return handler


def node(**extra: object) -> dict:
    return {
        "kind": "llm",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "system": "You triage tickets.",
        "prompt": "Ticket: {{ state.text }}",
        "output": "answer",
        **extra,
    }


def ctx_for(server: LocalServer, **extra: object) -> RunContext:
    return RunContext(
        llm_config={"openai": {"base_url": server.url + "/v1", "api_key": "sk-test"}}, **extra
    )


def test_streams_deltas_and_records_usage_and_cost(server: LocalServer) -> None:
    server.route(
        "/v1/chat/completions",
        streaming(
            ["Hel", "lo", " there"],
            {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24},
        ),
    )
    deltas: list[str] = []
    results = run_all(
        chain(("ask", node(temperature=0.2, max_tokens=50))),
        {"text": "help"},
        ctx_for(server, on_delta=lambda n, t: deltas.append(t)),
    )
    assert results[-1].state["answer"] == "Hello there"
    assert deltas == ["Hel", "lo", " there"]
    usage = results[0].usage
    assert (usage.tokens_in, usage.tokens_out) == (21, 3)
    assert usage.cost_usd == pytest.approx(cost_usd(DEFAULT_PRICES["openai"]["gpt-4o-mini"], 21, 3))
    assert usage.by_model["gpt-4o-mini"]["calls"] == 1
    request = server.requests[0]
    body = json.loads(request["body"])
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.2
    assert body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "You triage tickets."},
        {"role": "user", "content": "Ticket: help"},
    ]
    assert request["headers"]["Authorization"] == "Bearer sk-test"


def test_counts_tokens_itself_when_the_server_sends_no_usage(server: LocalServer) -> None:
    server.route("/v1/chat/completions", streaming(["two words"]))
    usage = run_all(chain(("ask", node())), {"text": "x"}, ctx_for(server))[0].usage
    assert usage.tokens_out == 2 and usage.tokens_in > 0


def test_server_errors_are_retried(server: LocalServer) -> None:
    calls = []

    def flaky(h: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        if len(calls) == 1:
            send(h, 503, b'{"error": "overloaded"}', "application/json")
        else:
            streaming(["fine"])(h)

    server.route("/v1/chat/completions", flaky)
    results = run_all(
        chain(("ask", node(retry={"max_attempts": 2, "backoff": 0}))),
        {"text": "x"},
        ctx_for(server),
    )
    assert results[-1].state["answer"] == "fine" and results[0].attempt == 2


def test_auth_errors_are_fatal(server: LocalServer) -> None:
    server.route(
        "/v1/chat/completions", lambda h: send(h, 401, b'{"error": "bad key"}', "application/json")
    )
    last = run_all(chain(("ask", node(retry={"max_attempts": 3}))), {"text": "x"}, ctx_for(server))[
        -1
    ]
    assert last.error["code"] == "llm_auth" and last.attempt == 1
    assert last.run_error["fatal"] is True


def test_missing_configuration_is_fatal() -> None:
    last = run_all(chain(("ask", node())), {"text": "x"})[-1]
    assert last.error["code"] == "llm_config" and last.run_error["fatal"] is True


def test_unreachable_endpoint_is_retryable() -> None:
    ctx = RunContext(llm_config={"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    last = run_all(chain(("ask", node())), {"text": "x"}, ctx)[-1]
    assert last.error["code"] == "llm_unavailable"
    assert last.run_error["fatal"] is False
