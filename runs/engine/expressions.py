"""Expressions (`when`, `set`) and templates (prompts, urls, messages) in a Jinja2 sandbox.

Never `eval`: everything goes through an ImmutableSandboxedEnvironment, which refuses
underscore/internal attributes and mutation of lists, dicts and sets. Unsafe access raises
at once (instead of Jinja's default of quietly yielding an undefined that becomes `None`), so a
probe like `state.__class__` fails loudly with code `expression_error`. Compiled expressions and
templates are cached by source text.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import nodes as jnodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.parser import Parser
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ExpressionError

# Caps that keep a hostile expression from allocating gigabytes ("x" * 10**10, 9**9**9).
MAX_SEQUENCE = 1_000_000
MAX_EXPONENT = 1_000


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is not allowed"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        # State is JSON: `state.items` should mean the key "items", not dict.items.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, (str, list, tuple)) and isinstance(count, int)
            if sized and len(seq) * count > MAX_SEQUENCE:
                raise SecurityError("result of * would be too large")
        return operator.mul(left, right)


_env = _Sandbox(autoescape=False, keep_trailing_newline=True)
# Only what expressions need; the default globals (cycler, joiner, lipsum) are attack surface.
_env.globals = {"range": _env.globals["range"], "dict": dict}


def _check_ast(tree: jnodes.Node) -> None:
    """Refuse private-attribute access at compile time, so validation reports it."""
    # find_all() skips the root, and `state.__class__` is a root Getattr.
    for node in [tree, *tree.find_all(jnodes.Getattr)]:
        if isinstance(node, jnodes.Getattr) and node.attr.startswith("_"):
            raise ExpressionError(f"access to attribute {node.attr!r} is not allowed")


def _describe(exc: Exception) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed: {exc}"
    return f"{type(exc).__name__}: {exc}"


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Callable[..., Any]:
    """Compile a Jinja expression (no `{{ }}`) once; raises ExpressionError if it is invalid."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression must be a non-empty string")
    try:
        parser = Parser(_env, source, state="variable")
        tree = parser.parse_expression()
        if not parser.stream.eos:
            raise ExpressionError(f"unexpected text after expression in {source!r}")
        _check_ast(tree)
        return _env.compile_expression(source, undefined_to_none=True)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {_describe(exc)}") from None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Callable[..., str]:
    """Compile a Jinja template once; returns its `render` function."""
    if not isinstance(source, str):
        raise ExpressionError("template must be a string")
    try:
        _check_ast(_env.parse(source))
        return _env.from_string(source).render
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {source!r}: {_describe(exc)}") from None


def evaluate(source: str, variables: Mapping[str, Any]) -> Any:
    """Evaluate an expression to a JSON value (tuples become lists, undefined becomes None)."""
    expression = compile_expression(source)
    try:
        return to_json_value(expression(**variables))
    except ExpressionError:
        raise
    except Exception as exc:
        raise ExpressionError(f"expression {source!r} failed: {_describe(exc)}") from None


def holds(source: str, variables: Mapping[str, Any]) -> bool:
    """Evaluate a condition; its Python truthiness decides."""
    expression = compile_expression(source)
    try:
        return bool(expression(**variables))
    except Exception as exc:
        raise ExpressionError(f"condition {source!r} failed: {_describe(exc)}") from None


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    render = compile_template(source)
    try:
        return render(**variables)
    except Exception as exc:
        raise ExpressionError(f"template {source!r} failed: {_describe(exc)}") from None


def to_json_value(value: Any) -> Any:
    """Coerce an expression result into plain JSON types, or refuse it."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # drops Markup and other str subclasses
    if isinstance(value, Undefined):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, range)) or _is_view(value):
        return [to_json_value(v) for v in value]
    raise ExpressionError(f"expression produced a {type(value).__name__}, which is not JSON")


def _is_view(value: Any) -> bool:
    return isinstance(value, Iterable) and type(value).__name__ in {
        "dict_keys",
        "dict_values",
        "dict_items",
        "generator",
        "list_iterator",
    }
