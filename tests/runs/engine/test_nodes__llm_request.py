"""The `llm.request` event: the rendered prompt and messages an llm step sent, bounded, kept
with the step's events (for the step inspector), also when the call failed."""

from __future__ import annotations

from runs.engine.nodes import llm as llm_node

from .helpers import chain, run_all


def llm(**fields: object) -> dict:
    return {
        "kind": "llm",
        "provider": "scripted",
        "responses": ["billing"],
        "output": "label",
        **fields,
    }


def requests(result: object) -> list[dict]:
    return [data for etype, data in result.events if etype == "llm.request"]  # type: ignore[attr-defined]


def test_the_rendered_prompt_system_and_history_are_recorded() -> None:
    node = llm(
        system="You sort tickets for {{ state.team }}.",
        history="state.history",
        prompt="Classify: {{ state.text }}",
        temperature=0.2,
    )
    spec = chain(("ask", node))
    results = run_all(
        spec,
        {
            "team": "support",
            "text": "refund please",
            "history": [{"role": "user", "content": "hi"}],
        },
    )
    (request,) = requests(results[0])
    assert request["node"] == "ask" and request["attempt"] == 1
    assert request["provider"] == "scripted" and request["model"] == "scripted"
    assert request["temperature"] == 0.2
    assert request["messages"] == [
        {"role": "system", "content": "You sort tickets for support."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "Classify: refund please"},
    ]
    assert "omitted_messages" not in request


def test_each_failed_attempt_records_what_it_sent() -> None:
    node = llm(prompt="Q: {{ state.text }}", fail_times=1, retry={"max_attempts": 2, "backoff": 0})
    results = run_all(chain(("ask", node)), {"text": "x"})
    assert results[0].status == "completed"
    assert [r["attempt"] for r in requests(results[0])] == [1, 2]
    assert requests(results[0])[0]["messages"] == [{"role": "user", "content": "Q: x"}]


def test_a_long_prompt_and_a_long_history_are_cut_with_counts() -> None:
    history = [{"role": "user", "content": f"m{i}"} for i in range(100)]
    big = "y" * (llm_node.REQUEST_MAX_CHARS + 500)
    node = llm(system="sys", history="state.history", prompt="{{ state.big }}")
    results = run_all(chain(("ask", node)), {"history": history, "big": big})
    (request,) = requests(results[0])
    messages = request["messages"]
    assert len(messages) == llm_node.REQUEST_MAX_MESSAGES
    assert request["omitted_messages"] == 102 - llm_node.REQUEST_MAX_MESSAGES
    assert messages[0] == {"role": "system", "content": "sys"}  # the first is kept
    assert messages[-1]["content"] == "y" * llm_node.REQUEST_MAX_CHARS
    assert messages[-1]["truncated_chars"] == 500
    total = sum(len(m["content"]) for m in messages)
    assert total <= llm_node.REQUEST_TOTAL_CHARS
