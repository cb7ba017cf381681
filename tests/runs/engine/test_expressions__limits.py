"""Expressions and templates are bounded: what they build is measured before it is built."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runs.engine import ExpressionError, bounds, evaluate, render_template
from runs.engine.errors import ExpressionLimit

from .helpers import chain, run_all

BIG = "x" * 600_000
VARS = {"state": {"s": BIG, "n": 3, "items": [1, 2], "text": "Hello"}, "run": {}}


def refused(call: Callable[[], Any]) -> ExpressionLimit:
    """Run `call` and expect `expression_limit`, fast, then again to see it stays small."""
    started = time.perf_counter()
    with pytest.raises(ExpressionLimit) as info:
        call()
    assert time.perf_counter() - started < 2
    tracemalloc.start()  # slows allocation-heavy code down several times: not timed
    try:
        with pytest.raises(ExpressionLimit):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000
    assert info.value.code == "expression_limit"
    assert info.value.fatal and not info.value.retryable
    return info.value


@pytest.fixture
def cap() -> Iterator[Callable[[int], None]]:
    before = bounds.max_value_bytes()
    yield lambda n: bounds.configure(max_value_bytes=n)
    bounds.configure(max_value_bytes=before)


# --- the cases of issue #15 ---------------------------------------------------------------


def test_padding_a_megabyte_to_one_and_a_half_gigabytes_is_refused() -> None:
    error = refused(lambda: evaluate("('a' * 500000).ljust(1500000000)", VARS))
    assert "ljust" in error.message and error.details["limit"] == "max_value_bytes"


def test_the_megabyte_itself_is_over_the_default_cap() -> None:
    refused(lambda: evaluate("('a' * 1000000).ljust(1500000000)", VARS))


def test_nested_repetition_is_counted_element_by_element() -> None:
    refused(lambda: evaluate("[[[1] * 1000] * 1000] * 100", VARS))
    # Each level under the cap; the whole expands past it (the JSON would be 10^8 elements).
    refused(lambda: evaluate("[[[1] * 100] * 100] * 100", VARS))


def test_shared_references_are_measured_fully_in_the_result() -> None:
    # `dict.fromkeys` shares one value: tiny in memory, 100 MB as JSON.
    refused(lambda: evaluate("{}.fromkeys(range(1000), 'x' * 100000)", VARS))


def test_towers_of_powers_are_refused_before_computing() -> None:
    error = refused(lambda: evaluate("((2 ** 1000) ** 1000) ** 1000", VARS))
    assert error.details["limit"] == "int_bits"
    refused(lambda: evaluate("2 ** 100000", VARS))
    refused(lambda: evaluate("(2 ** 60000) * (2 ** 60000)", VARS))
    assert evaluate("2 ** 64", VARS) == 2**64


def test_wordwrap_of_a_megabyte_is_refused_and_small_wraps_work() -> None:
    refused(lambda: evaluate("('a b ' * 250000) | wordwrap(1)", VARS))
    refused(lambda: evaluate("('a' * 90000) | wordwrap(1)", VARS))
    assert evaluate("'aaa bbb' | wordwrap(3)", VARS) == "aaa\nbbb"


def test_doubling_state_is_capped_at_each_evaluation() -> None:
    state = {"s": "x" * 1000}
    with pytest.raises(ExpressionLimit):
        for _ in range(20):
            state["s"] = evaluate("state.s ~ state.s", {"state": state})
    assert 500_000 <= len(state["s"]) <= 1_000_000


# --- every way to build something ---------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "state.s * 2",
        "state.s + state.s",
        "[state.s] + [state.s]",
        "state.s ~ state.s",
        "'%5000000000s' % 1",
        "'%.900000000f' % 1.5",
        "'%*s' % (10 ** 9, 'x')",
        "'%s%s' % (state.s, state.s)",
        "'{:>99999999}'.format(1)",
        "'{:{}}'.format(1, 999999999)",
        "'{0}{0}'.format(state.s)",
        "'{x}{x}'.format_map({'x': state.s})",
        "'x' | center(10 ** 9)",
        "'x'.center(10 ** 9)",
        "'x'.rjust(10 ** 9)",
        "'1'.zfill(10 ** 9)",
        "('\\t' * 100).expandtabs(10 ** 7)",
        "state.s.replace('x', 'yy')",
        "state.s | replace('x', 'yy')",
        "('a' * 100) | replace('', 'b' * 100000)",
        "'-'.join([state.s, state.s])",
        "[state.s, state.s] | join",
        "('a\n' * 300000) | indent(10)",
        "('a\\n' * 1000) | indent(10 ** 6)",
        "('a\\n' * 1000) | indent('x' * 10000)",
        "'%s' | format('x' * 10 ** 6)",
        "'%*s' | format(10 ** 9, 'x')",
        "[1] | batch(10 ** 9, 'x') | list",
        "[1] | slice(10 ** 9) | list",
        "([[1]] * 5000) | sum(start=[])",
        "state.s | list",
        "[state.s, state.s] | tojson",
        "state.n | tojson(indent=100000)",
        "[state.s, state.s] | string",
        "[state.s, state.s] | pprint",
        "1.5 | round(10 ** 9, 'ceil')",
        "(1).to_bytes(10 ** 9, 'big')",
        "state.s.upper() ~ state.s",
        "('ab ' * 400000).split()",
        "'abc'.translate({97: 'x' * 10 ** 6})",
        "dict(a=state.s, b=state.s)",
        "(range(100000) | list) * 10",
    ],
)
def test_building_past_the_cap_is_refused(source: str) -> None:
    refused(lambda: evaluate(source, VARS))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'ab' * 3", "ababab"),
        ("[1, 2] * 2", [1, 2, 1, 2]),
        ("[1] + [2]", [1, 2]),
        ("'a' ~ 1 ~ [2]", "a1[2]"),
        ("'%05.1f|%-4s|%d' % (2.25, 'x', 7)", "002.2|x   |7"),
        ("'{:>5}|{:.2f}'.format('a', 1)", "    a|1.00"),
        ("'{a}'.format_map({'a': 1})", "1"),
        ("'x' | center(5)", "  x  "),
        ("'7'.zfill(3)", "007"),
        ("'a-b' | replace('-', '+')", "a+b"),
        ("[1, 2] | join(',')", "1,2"),
        ("'a\\nb' | indent(2)", "a\n  b"),
        ("'%s!' | format('hi')", "hi!"),
        ("[1, 2, 3] | batch(2, 0) | list", [[1, 2], [3, 0]]),
        ("[[1], [2]] | sum(start=[])", [1, 2]),
        ("[1, 2] | sum", 3),
        ("{'a': 1} | tojson", '{"a": 1}'),
        ("1.25 | round(1, 'ceil')", 1.3),
        ("range(100000) | list | length", 100000),
        ("state.s | length", 600_000),
        ("(state.s ~ 'y') | length", 600_001),
        ("state.text.upper()", "HELLO"),
        ("'a b'.split()", ["a", "b"]),
        ("dict(a=1)", {"a": 1}),
        ("2 ** 0.5 > 1", True),
    ],
)
def test_legitimate_expressions_still_work(source: str, expected: object) -> None:
    assert evaluate(source, VARS) == expected


def test_the_cap_is_a_setting_of_the_engine(cap: Callable[[int], None]) -> None:
    cap(100)
    with pytest.raises(ExpressionLimit) as info:
        evaluate("'x' * 200", VARS)
    assert "100-byte limit" in info.value.message
    cap(10_000)
    assert evaluate("'x' * 200", VARS) == "x" * 200


def test_a_result_read_from_state_over_the_cap_is_refused(cap: Callable[[int], None]) -> None:
    cap(1000)
    with pytest.raises(ExpressionLimit):
        evaluate("state.s", VARS)


# --- templates ------------------------------------------------------------------------------


def test_nested_loops_are_refused_within_a_second() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    error = refused(lambda: render_template(source, VARS))
    assert error.details["limit"] == "steps"


def test_a_loop_over_a_big_body_is_charged_for_the_body() -> None:
    body = "{{ i - i - i - i - i - i - i - i - i - i }}" * 20
    refused(lambda: render_template("{% for i in range(100000) %}" + body + "{% endfor %}", VARS))


def test_a_loop_over_plain_text_is_charged_for_the_text() -> None:
    source = "{% for i in range(100000) %}" + "x" * 10_000 + "{% endfor %}"
    refused(lambda: render_template(source, VARS))


def test_a_filtered_loop_is_charged_per_item_tested() -> None:
    source = "{% for i in range(100000) if i < 0 %}{% endfor %}" * 20
    refused(lambda: render_template(source, VARS))


def test_exponential_macro_recursion_is_refused() -> None:
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    refused(lambda: render_template(source, VARS))


def test_template_output_is_capped_in_total_and_per_piece() -> None:
    refused(lambda: render_template("{% for i in range(10) %}{{ state.s }}{% endfor %}", VARS))
    refused(lambda: render_template("{{ [state.s, state.s] }}", VARS))
    captured = "{% set x %}{% for i in range(100) %}{{ state.s }}{% endfor %}{% endset %}"
    refused(lambda: render_template(captured + "{{ x | length }}", VARS))


def test_ordinary_templates_render() -> None:
    source = (
        "{% macro item(x) %}- {{ x }}{% endmacro %}"
        "{% for i in state.items %}{{ item(i) }}{% if not loop.last %}\n{% endif %}{% endfor %}"
        "{% filter upper %} {{ state.text }}{% endfilter %}"
    )
    assert render_template(source, VARS) == "- 1\n- 2 HELLO"
    assert render_template("{{ none }}|{{ state.missing }}|{{ [1] }}", VARS) == "None||[1]"


@pytest.mark.parametrize(
    "source",
    [
        "{% for x in state.items recursive %}{{ loop(x) }}{% endfor %}",
        "{% include 'x' %}",
        "{% extends 'x' %}",
        "{% import 'x' as y %}",
        "{{ state | nosuchfilter }}",
        "{{ state is nosuchtest }}",
    ],
)
def test_template_constructs_that_cannot_be_bounded_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        render_template(source, VARS)
    assert info.value.code == "expression_error"


# --- the node and key are named -------------------------------------------------------------


def test_a_transform_over_the_cap_fails_its_run_naming_node_and_key() -> None:
    spec = chain(
        ("seed", {"kind": "transform", "set": {"s": "'x' * 600000"}}),
        ("grow", {"kind": "transform", "set": {"ok": "1", "s": "state.s ~ state.s"}}),
    )
    last = run_all(spec)[-1]
    assert last.status == "failed"
    error = last.run_error
    assert error is not None
    assert error["code"] == "expression_limit" and error["node"] == "grow"
    assert "'grow'" in error["message"] and "'set.s'" in error["message"]
    assert error["details"]["node"] == "grow" and error["details"]["key"] == "set.s"
    assert error["details"]["limit"] == "max_value_bytes"


def test_a_prompt_over_the_cap_names_its_field() -> None:
    llm = {
        "kind": "llm",
        "provider": "scripted",
        "responses": ["ok"],
        "output": "answer",
        "messages": [{"role": "user", "content": "{{ 'x' * 10 ** 7 }}"}],
    }
    error = run_all(chain(("ask", llm)))[-1].run_error
    assert error is not None
    assert error["code"] == "expression_limit"
    assert error["details"]["key"] == "messages[0].content"
    assert "'ask'" in error["message"]


def test_a_when_over_the_cap_fails_the_run_with_expression_limit() -> None:
    spec = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    spec["edges"][0]["when"] = "('x' * 10 ** 8) == ''"
    spec["edges"].append({"from": "a", "to": "done"})
    error = run_all(spec)[-1].run_error
    assert error is not None
    assert error["code"] == "expression_limit" and error["node"] == "a"
