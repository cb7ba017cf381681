from __future__ import annotations

import pytest

from runs.engine import ExpressionError, compile_expression, evaluate, render_template
from runs.engine.expressions import compile_template

from .helpers import chain, run_all

STATE = {"text": "Hello", "n": 3, "items": [1, 2], "tags": {"a": 1}, "get": "key wins"}
VARS = {"state": STATE, "run": {"user": "ann"}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("state.n * 2", 6),
        ("state.text | upper", "HELLO"),
        ("state.items | length", 2),
        ("state.items", [1, 2]),
        ("state.get", "key wins"),
        ("state.missing", None),
        ("state.n > 2 and 'big' or 'small'", "big"),
        ("(1, 2)", [1, 2]),
        ("{'a': state.n}", {"a": 3}),
        ("run.user", "ann"),
        ("state.tags.keys() | list", ["a"]),
        ("'%s-%d' % (state.text, state.n)", "Hello-3"),
    ],
)
def test_expressions_evaluate_to_json(source: str, expected: object) -> None:
    assert evaluate(source, VARS) == expected


@pytest.mark.parametrize(
    "source",
    [
        "state.__class__",
        "().__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "state['__class__']",
        "state | attr('__class__')",
        "'{0.__class__}'.format(state)",
        "state.items.append(3)",
        "state.tags.update({'x': 1})",
        "range(10 ** 9) | list",
        "lipsum()",
        "cycler(1)",
        "state.text.__len__()",
    ],
)
def test_attempts_to_reach_python_internals_fail(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(source, VARS)
    assert info.value.code == "expression_error"


def test_sandbox_refusal_says_what_was_refused() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("state | attr('__class__')", VARS)
    assert "'__class__'" in info.value.message and "not allowed" in info.value.message


def test_templates_render_and_are_sandboxed() -> None:
    assert render_template("{{ state.text }} x{{ state.n }}", VARS) == "Hello x3"
    with pytest.raises(ExpressionError):
        render_template("{{ state.__class__ }}", VARS)
    with pytest.raises(ExpressionError):
        render_template("{{ (state|attr('__class__')) }}", VARS)


def test_compiled_expressions_and_templates_are_cached() -> None:
    assert compile_expression("state.n + 41") is compile_expression("state.n + 41")
    assert compile_template("hi {{ state.n }}") is compile_template("hi {{ state.n }}")


def test_expression_results_are_plain_json() -> None:
    assert evaluate("state.text ~ ''", VARS).__class__ is str
    with pytest.raises(ExpressionError):
        evaluate("dict", VARS)


def test_a_sandbox_violation_at_run_time_fails_the_run_with_expression_error() -> None:
    spec = chain(("t", {"kind": "transform", "set": {"x": "state | attr('__class__')"}}))
    results = run_all(spec)
    assert results[-1].status == "failed"
    assert results[-1].run_error["code"] == "expression_error"
    assert results[-1].run_error["node"] == "t"
    assert "'t'" in results[-1].run_error["message"]


@pytest.mark.parametrize(
    "source",
    ["ok", "", "x\n", "  lead\n\n", "% x", "## y", "a}b", "tab\tz", "uni ✓", "a\r\nb", "a\rb"],
)
def test_text_without_template_syntax_renders_as_jinja_renders_it(source: str) -> None:
    """Text with no `{` is returned as it is, without a render; what Jinja changes (it
    rewrites `\\r\\n` and `\\r` to `\\n`) still goes through Jinja."""
    assert render_template(source, {}) == compile_template(source)()
