"""Generated hostile expressions and templates finish fast and small, or fail with a named error.

Hypothesis composes big literals, repetition, concatenation, powers, formatting, methods and
filters with huge arguments, nested in each other; whatever it builds, each evaluation must
end within a second or two and stay within tens of megabytes, returning a value or raising
ExpressionError (`expression_limit` for bounds).
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.engine import ExpressionError, evaluate, render_template

VARS = {"state": {"s": "ab " * 100_000, "n": 7, "items": list(range(1000))}, "run": {}}

NUMBERS = st.sampled_from(["0", "1", "3", "100", "1000", "100000", "10 ** 6", "10 ** 9", "-5"])
ATOMS = st.one_of(
    NUMBERS,
    st.sampled_from(["'a'", "'ab\\n'", "'\\t'", "state.s", "state.items", "state.n", "[1]"]),
    st.sampled_from(["[[1] * 100] * 100", "range(100000)", "{'k': state.s}", "2 ** 1000"]),
)
FILTERS = [
    "center({n})", "indent({n})", "wordwrap(1)", "join", "join({a})", "replace('a', {a})",
    "batch({n}, {a})", "slice({n}, {a})", "list", "sum", "tojson", "string", "pprint",
    "format({a}, {a})", "truncate({n})", "unique", "sort", "reverse", "title", "upper",
    "round({n}, 'ceil')", "urlize", "striptags", "xmlattr", "dictsort", "length", "first",
    "map('string')", "map('center', {n})", "tojson(indent={n})", "items",
]  # fmt: skip
COMBINATIONS = [
    "({a}) * ({b})", "({a}) + ({b})", "({a}) ~ ({b})", "({a}) ** ({b})", "[{a}, {b}]",
    "({a}).ljust({n})", "({a}).zfill({n})", "({a}).center({n})", "({a}).replace('a', {b})",
    "({a}).join([{b}, {b}])", "'%{n}s' % ({a})", "'%*s' % ({n}, {a})", "'{{:>{n}}}'.format({a})",
    "'{{0}}{{0}}{{0}}'.format({a})", "range({n})", "dict(a={a}, b={b})", "({a}).split()",
    "({a}).expandtabs({n})", "(({a}) | {filter})",
]  # fmt: skip


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: Callable[..., Any]) -> str:
        template = draw(st.sampled_from(COMBINATIONS))
        filter_ = draw(st.sampled_from(FILTERS)).format(n=draw(NUMBERS), a=draw(children))
        return template.format(a=draw(children), b=draw(children), n=draw(NUMBERS), filter=filter_)

    return build()


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=8)


def _bounded(call: Callable[[], Any]) -> None:
    started = time.perf_counter()
    with contextlib.suppress(ExpressionError):
        call()
    assert time.perf_counter() - started < 2.0
    tracemalloc.start()
    try:
        with contextlib.suppress(ExpressionError):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
@given(EXPRESSIONS)
def test_generated_expressions_stay_bounded(source: str) -> None:
    _bounded(lambda: evaluate(source, VARS))


@SETTINGS
@given(EXPRESSIONS, EXPRESSIONS, NUMBERS)
def test_generated_templates_stay_bounded(inner: str, output: str, count: str) -> None:
    source = (
        f"{{% for i in range({count}) %}}{{% for j in range({count}) %}}"
        f"{{{{ {output} }}}}{{% endfor %}}{{{{ {inner} }}}}{{% endfor %}}"
    )
    _bounded(lambda: render_template(source, VARS))
