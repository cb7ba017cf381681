"""Expressions (`when`, `set`) and templates (prompts, urls, messages) in a Jinja2 sandbox.

Never `eval`: everything goes through an ImmutableSandboxedEnvironment, which refuses
underscore/internal attributes and mutation of lists, dicts and sets. Unsafe access raises
at once (instead of Jinja's default of quietly yielding an undefined that becomes `None`), so a
probe like `state.__class__` fails loudly with code `expression_error`. Compiled expressions and
templates are cached by source text.

Nothing an expression does may build more than the per-value cap or run without end
(bounds.py): `*`, `+`, `%`, `~`, method calls, `str.format`, filters and template output are
measured before they build, and every loop iteration and macro call is charged its body's
size. Over a bound the node fails with `expression_limit`, naming node and key.
"""

from __future__ import annotations

import functools
import operator
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes as jnodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.parser import Parser
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.visitor import NodeTransformer

from . import bounds
from .bounded_filters import guard
from .errors import ExpressionError, ExpressionLimit

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "+": operator.add,
    "%": operator.mod,
}


class _BoundedFormatter(SandboxedFormatter):
    """`str.format`: each field's width and value are measured before it is formatted."""

    built = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self.built = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.built += bounds.check_format_field(format_spec, value, bounds.budget(), self.built)
        return super().format_field(value, format_spec)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)

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
        b = bounds.budget()
        b.step()
        if op == "*":
            bounds.check_mul(left, right, b)
        elif op == "**":
            bounds.check_pow(left, right)
        elif op == "+":
            bounds.check_add(left, right, b)
        elif isinstance(left, str):
            bounds.check_printf(left, right, b)
        return _BINOPS[op](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        b = bounds.budget()
        b.step()
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        measure = __obj is dict
        if isinstance(__obj, types.BuiltinMethodType):
            owner, name = __obj.__self__, __obj.__name__
            if name == "join" and isinstance(owner, str) and args:
                args = (bounds.take(args[0], b, "`join`"), *args[1:])
            measure = bounds.check_method(owner, name, args, kwargs, b)
        result = __context.call(__obj, *args, **kwargs)
        if measure:
            b.charge(bounds.size_of(result, b.cap + 1), "the call")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        is_map = value.__name__ == "format_map"
        formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return str(formatter.vformat(str(f_self), args, kwargs))

        return functools.update_wrapper(wrapper, value)

    # Template output: each `{{ }}` is measured before str() expands it, and the whole render
    # is capped as it is joined.
    @staticmethod
    def concat(pieces: Iterable[str]) -> str:
        b = bounds.budget()
        cap = b.cap
        parts = []
        total = 0
        for piece in pieces:
            total += len(piece)
            if total > cap:
                b.allow(total, "the rendered template")
            parts.append(piece)
        return "".join(parts)

    # Called by the code _Bounding inserts (through `call`, so each costs a step too).
    def bounded_iter(self, iterable: Iterable[Any], cost: int) -> Iterator[Any]:
        b = bounds.budget()
        for item in iterable:
            b.steps -= cost
            if b.steps < 0:
                b.step(0)  # raises
            yield item

    def bounded_steps(self, cost: int) -> str:
        bounds.budget().step(cost)
        return ""

    def bounded_concat(self, values: tuple[Any, ...]) -> str:
        return bounds.concat(values, bounds.budget())

    def _generate(
        self,
        source: jnodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        return super()._generate(_Bounding().visit(source), name, filename, defer_init)


def _finalize(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float or kind is bool or value is None:
        return value  # str() of a number: int_bits already bounds its digits
    b = bounds.budget()
    text = bounds.text_of(value, b, "template output")
    b.charge(len(text), "template output")
    return text


def _weight(items: Iterable[jnodes.Node | None]) -> int:
    """Steps one run of `items` costs: its nodes, and its plain text by the hundred bytes."""
    weight = 0
    for item in items:
        if item is not None:
            for node in [item, *item.find_all(jnodes.Node)]:
                weight += 1 + (
                    len(node.data) // 100 if isinstance(node, jnodes.TemplateData) else 0
                )
    return weight


def _env_call(name: str, *args: jnodes.Node, lineno: int) -> jnodes.Call:
    call = jnodes.Call(jnodes.EnvironmentAttribute(name), list(args), [], None, None)
    call.set_lineno(lineno)
    return call


class _Bounding(NodeTransformer):
    """Charge every loop iteration and macro call its body's size; route `~` through a check."""

    def _charge_body(self, node: Any) -> Any:
        self.generic_visit(node)
        step = jnodes.ExprStmt(
            _env_call("bounded_steps", jnodes.Const(_weight(node.body)), lineno=node.lineno)
        )
        node.body.insert(0, step.set_lineno(node.lineno))
        return node

    def visit_For(self, node: jnodes.For) -> jnodes.For:
        # Charged by the iterator rather than a call in the body: the loop itself stays cheap.
        self.generic_visit(node)
        cost = jnodes.Const(1 + _weight([node.test]) + _weight(node.body))
        node.iter = _env_call("bounded_iter", node.iter, cost, lineno=node.lineno)
        return node

    visit_Macro = _charge_body
    visit_CallBlock = _charge_body

    def visit_Concat(self, node: jnodes.Concat) -> jnodes.Call:
        self.generic_visit(node)
        values = jnodes.Tuple(list(node.nodes), "load")
        values.set_lineno(node.lineno)
        return _env_call("bounded_concat", values, lineno=node.lineno)


_env = _Sandbox(autoescape=False, keep_trailing_newline=True, finalize=_finalize)
# Only what expressions need; the default globals (cycler, joiner, lipsum) are attack surface.
_env.globals = {"range": _env.globals["range"], "dict": dict}
_env.filters = {name: guard(name, func) for name, func in _env.filters.items()}
_NOT_ALLOWED = (jnodes.Extends, jnodes.Include, jnodes.Import, jnodes.FromImport)


def _check_ast(tree: jnodes.Node) -> None:
    """Refuse at parse time what must never run, so validation reports it."""
    # find_all() skips the root, and `state.__class__` is a root Getattr.
    for node in [tree, *tree.find_all(jnodes.Node)]:
        if isinstance(node, jnodes.Getattr) and node.attr.startswith("_"):
            raise ExpressionError(f"access to attribute {node.attr!r} is not allowed")
        if isinstance(node, jnodes.For) and node.recursive:
            raise ExpressionError("recursive loops are not allowed")
        if isinstance(node, _NOT_ALLOWED):
            raise ExpressionError(f"`{type(node).__name__.lower()}` is not allowed")
        if isinstance(node, jnodes.Filter) and node.name not in _env.filters:
            raise ExpressionError(f"no filter named {node.name!r}")
        if isinstance(node, jnodes.Test) and node.name not in _env.tests:
            raise ExpressionError(f"no test named {node.name!r}")


def _describe(exc: Exception) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _short(source: str) -> str:
    return source if len(source) <= 120 else source[:117] + "..."


def _parse_expression(source: str) -> jnodes.Expr:
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression must be a non-empty string")
    try:
        parser = Parser(_env, source, state="variable")
        tree = parser.parse_expression()
        if not parser.stream.eos:
            raise ExpressionError(f"unexpected text after expression in {_short(source)!r}")
        _check_ast(tree)
        return tree
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {_short(source)!r}: {_describe(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"expression {_short(source)!r} is nested too deeply") from None


def _parse_template(source: str) -> jnodes.Template:
    if not isinstance(source, str):
        raise ExpressionError("template must be a string")
    try:
        tree = _env.parse(source)
        _check_ast(tree)
        return tree
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {_short(source)!r}: {_describe(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"template {_short(source)!r} is nested too deeply") from None


@functools.lru_cache(maxsize=4096)
def check_expression(source: str) -> None:
    """Parse and check an expression without generating code (validation: ~10x cheaper)."""
    _parse_expression(source)


@functools.lru_cache(maxsize=4096)
def check_template(source: str) -> None:
    """Parse and check a template without generating code."""
    _parse_template(source)


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Callable[..., Any]:
    """Compile a Jinja expression (no `{{ }}`) once; raises ExpressionError if it is invalid."""
    _parse_expression(source)
    try:
        return _env.compile_expression(source, undefined_to_none=True)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {_short(source)!r}: {_describe(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"expression {_short(source)!r} is nested too deeply") from None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Callable[..., str]:
    """Compile a Jinja template once; returns its `render` function."""
    _parse_template(source)
    try:
        return _env.from_string(source).render
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {_short(source)!r}: {_describe(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"template {_short(source)!r} is nested too deeply") from None


def _failure(what: str, source: str, exc: Exception) -> ExpressionError:
    if isinstance(exc, ExpressionLimit):
        return ExpressionLimit(f"{what} {_short(source)!r}: {exc.message}", details=exc.details)
    if isinstance(exc, ExpressionError):
        return exc
    return ExpressionError(f"{what} {_short(source)!r} failed: {_describe(exc)}")


def evaluate(
    source: str, variables: Mapping[str, Any], *, node: str | None = None, key: str | None = None
) -> Any:
    """Evaluate an expression to a JSON value (tuples become lists, undefined becomes None).

    `node` and `key` (`set.total`, `prompt`...) name the place in errors.
    """
    try:
        expression = compile_expression(source)
        with bounds.bounded() as b:
            value = expression(**variables)
            # Measured before converting: `[[x] * 1000] * 1000` shares x, its JSON does not.
            b.size(value, "the result")
            return to_json_value(value)
    except Exception as exc:
        raise _failure("expression", source, exc).located(node, key, source) from None


def holds(
    source: str, variables: Mapping[str, Any], *, node: str | None = None, key: str | None = None
) -> bool:
    """Evaluate a condition; its Python truthiness decides."""
    try:
        expression = compile_expression(source)
        with bounds.bounded():
            return bool(expression(**variables))
    except Exception as exc:
        raise _failure("condition", source, exc).located(node, key, source) from None


def render_template(
    source: str, variables: Mapping[str, Any], *, node: str | None = None, key: str | None = None
) -> str:
    if "{" not in source and "\r" not in source:
        # No tag, expression or comment can start, and Jinja rewrites only newlines: the text
        # renders as itself (a scripted reply, a fixed prompt), without a render context.
        return source
    try:
        render = compile_template(source)
        with bounds.bounded():
            return render(**variables)
    except Exception as exc:
        raise _failure("template", source, exc).located(node, key, source) from None


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
