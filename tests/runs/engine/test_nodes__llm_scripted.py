from __future__ import annotations

import time

import pytest

from runs.engine import Executor, RunContext, initial_state, parse_spec
from runs.engine.llm import count_tokens, split_tokens
from runs.engine.pricing import SCRIPTED_PRICE, cost_usd, simulated_price

from .helpers import chain, run_all


def llm(**fields: object) -> dict:
    return {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "Classify: {{ state.text }}",
        "output": "label",
        **fields,
    }


def loop(node: dict, times: int) -> dict:
    return {
        "name": "loop",
        "start": "ask",
        "state": {
            "answers": {"reducer": "append", "default": []},
            "n": {"reducer": "add", "default": 0},
        },
        "nodes": {
            "ask": {**node, "output": "answers"},
            "count": {"kind": "transform", "set": {"n": "1"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "ask", "to": "count"},
            {"from": "count", "to": "done", "when": f"state.n >= {times}"},
            {"from": "count", "to": "ask"},
        ],
    }


def test_tokenizer_is_deterministic_and_lossless() -> None:
    text = "Hello, world!  It's 42."
    assert "".join(split_tokens(text)) == text
    assert count_tokens(text) == 9  # Hello , world ! It ' s 42 .


def test_responses_are_used_in_turn_per_visit_then_the_last_repeats() -> None:
    results = run_all(loop(llm(responses=["one", "two"]), 4))
    assert results[-1].state["answers"] == ["one", "two", "two", "two"]


def test_cycle_starts_the_responses_over() -> None:
    results = run_all(loop(llm(responses=["one", "two"], cycle=True), 4))
    assert results[-1].state["answers"] == ["one", "two", "one", "two"]


def test_responses_are_templates_and_json_values_pass_through() -> None:
    spec = chain(
        ("a", llm(responses=["Echo {{ state.text }}"])),
        ("b", llm(responses=[{"label": "urgent", "score": 0.9}], output="data")),
    )
    state = run_all(spec, {"text": "hi"})[-1].state
    assert state["label"] == "Echo hi"
    assert state["data"] == {"label": "urgent", "score": 0.9}


def test_format_json_parses_the_reply() -> None:
    spec = chain(("a", llm(responses=['```json\n{"label": "billing"}\n```'], format="json")))
    assert run_all(spec, {"text": "x"})[-1].state["label"] == {"label": "billing"}


def test_bad_json_reply_is_a_retryable_failure() -> None:
    spec = chain(("a", llm(responses=["not json"], format="json")))
    assert run_all(spec, {"text": "x"})[-1].error["code"] == "llm_bad_json"


def test_tokens_and_cost_are_counted_per_model() -> None:
    spec = chain(
        ("a", llm(responses=["urgent ticket"])),
        ("b", llm(responses=["ok"], model="gpt-4o-mini", output="b")),
    )
    results = run_all(spec, {"text": "my printer is on fire"})
    first = results[0].usage
    assert (first.tokens_in, first.tokens_out) == (7, 2)  # Classify : my printer is on fire
    assert first.cost_usd == pytest.approx(cost_usd(SCRIPTED_PRICE, 7, 2))
    assert first.by_model == {
        "scripted": {"tokens_in": 7, "tokens_out": 2, "cost_usd": first.cost_usd, "calls": 1}
    }
    assert set(results[1].usage.by_model) == {"gpt-4o-mini"}


def test_a_scripted_spec_may_simulate_any_price() -> None:
    assert simulated_price("gpt-4o-mini-2024-07-18") == simulated_price("gpt-4o-mini") != (0, 0)
    assert simulated_price("unknown-model") == (0.0, 0.0)
    spec = chain(("a", llm(responses=["x"], price={"input": 1000000, "output": 0})))
    assert run_all(spec, {"text": "a b"})[0].usage.cost_usd == pytest.approx(4.0)


def test_deltas_are_streamed_through_the_callback() -> None:
    deltas: list[tuple[str, str]] = []
    spec = chain(("a", llm(responses=["Hello there, friend."])))
    run_all(
        spec, {"text": "x"}, RunContext(on_delta=lambda node, text: deltas.append((node, text)))
    )
    assert {node for node, _ in deltas} == {"a"}
    assert "".join(text for _, text in deltas) == "Hello there, friend."
    assert len(deltas) == 5


def test_fail_times_fails_the_first_attempts_of_a_visit() -> None:
    spec = chain(
        ("a", llm(responses=["ok"], fail_times=2, retry={"max_attempts": 3, "backoff": 0}))
    )
    results = run_all(spec, {"text": "x"})
    assert results[0].status == "completed" and results[0].attempt == 3
    # The streamed reply is stored with the step as one llm.delta (viewers saw it live).
    kinds = [k for k, _ in results[0].events if k != "llm.request"]
    assert kinds == ["step.retrying", "step.retrying", "llm.delta"]
    failing = chain(("a", llm(responses=["ok"], fail_times=2, retry={"max_attempts": 2})))
    last = run_all(failing, {"text": "x"})[-1]
    assert last.error["code"] == "llm_unavailable" and last.run_error["code"] == "node_failed"


def test_latency_is_simulated() -> None:
    spec = chain(("a", llm(responses=["ok"], latency_ms=200)))
    started = time.monotonic()
    run_all(spec, {"text": "x"})
    assert 0.2 <= time.monotonic() - started < 1.0


def test_system_history_and_messages() -> None:
    spec = chain(
        (
            "a",
            {
                "kind": "llm",
                "provider": "scripted",
                "output": "o",
                "responses": ["r"],
                "system": "Be brief.",
                "history": "state.chat",
                "messages": [{"role": "user", "content": "{{ state.q }}"}],
            },
        )
    )
    results = run_all(
        spec,
        {
            "q": "why?",
            "chat": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        },
    )
    assert results[0].usage.tokens_in == 3 + 1 + 1 + 2  # Be brief . | hi | hello | why ?


def test_scripted_reply_for_a_visit_is_the_same_after_a_resume() -> None:
    spec = parse_spec(loop(llm(responses=["one", "two", "three"]), 3))
    full = list(Executor(spec).run(initial_state(spec, {})))
    middle = full[2]  # after ask, count, ask
    resumed = list(Executor(spec).run(middle.state, middle.position))
    assert resumed[-1].state == full[-1].state
