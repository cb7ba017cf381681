"""Jinja's filters, each checked before it runs (see bounds.py).

Filters are called directly by compiled templates, not through the sandbox's `call` hook, so
the only way to bound them is to wrap each one. A wrapper measures the input, checks the
arguments that decide the result's size (widths, counts, fill values), runs the filter and
measures what it built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from .bounds import (
    COSTLY_WORK_FACTOR,
    MAX_COSTLY_INPUT,
    Budget,
    budget,
    check_printf,
    size_of,
    take,
    text_of,
)
from .errors import ExpressionLimit

Check = Callable[[Budget, Any, tuple, dict], tuple[Any, tuple, dict]]

# Filters returning one of their inputs, a number, a lazy iterator or a short summary: their
# own cost is bounded by the size of an input that already exists.
PASS = frozenset(
    {
        "abs", "attr", "count", "d", "default", "filesizeformat", "first", "float", "int",
        "items", "last", "length", "max", "min", "random", "reject", "rejectattr", "safe",
        "select", "selectattr", "map", "wordcount", "truncate",
    }
)  # fmt: skip
# Pure Python or regex-heavy per character: input capped, and counted ten times over.
COSTLY = frozenset({"pprint", "striptags", "title", "urlize", "wordwrap", "xmlattr"})


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _width(value: Any, what: str, b: Budget) -> int:
    if isinstance(value, int):
        b.allow(value, what)
        return max(value, 0)
    return 0


def _center(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    text = text_of(value, b, "`center`")
    b.allow(max(len(text), _width(_arg(args, kwargs, 0, "width", 80), "`center`", b)), "`center`")
    return text, args, kwargs


def _indent(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    text = text_of(value, b, "`indent`")
    width = _arg(args, kwargs, 0, "width", 4)
    step = len(width) if isinstance(width, str) else _width(width, "`indent`", b)
    b.allow(len(text) + (text.count("\n") + 2) * step, "`indent`")
    return text, args, kwargs


def _format(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    text = text_of(value, b, "`format`")
    check_printf(text, kwargs or args, b)
    return text, args, kwargs


def _join(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    items = take(value, b, "`join`")
    glue = _arg(args, kwargs, 0, "d", "")
    glue_size = len(glue) if isinstance(glue, str) else size_of(glue, b.cap + 1)
    total = glue_size * max(len(items) - 1, 0)
    b.allow(total, "`join`")
    for item in items:
        total += size_of(item, b.cap + 1)
        b.allow(total, "`join`")
    return items, args, kwargs


def _replace(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    text = text_of(value, b, "`replace`")
    old = str(_arg(args, kwargs, 0, "old", ""))
    new = text_of(_arg(args, kwargs, 1, "new", ""), b, "`replace`")
    count = _arg(args, kwargs, 2, "count", None)
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    b.allow(len(text) + hits * max(len(new) - len(old), 0), "`replace`")
    return text, args, kwargs


def _wordwrap(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    text = text_of(value, b, "`wordwrap`")
    width = _arg(args, kwargs, 0, "width", 79)
    wrap = _arg(args, kwargs, 2, "wrapstring", None)
    width = width if isinstance(width, int) and width > 0 else 1
    # textwrap costs about 5 µs per line it makes: wordwrap(1) over 1 MB took 50 s.
    lines = len(text) // width + sum(text.count(c) for c in " \t\n\r") + 1
    if len(text) // width > MAX_COSTLY_INPUT // 5:
        raise ExpressionLimit(
            f"`wordwrap` would make {len(text) // width:,} lines, over the limit of "
            f"{MAX_COSTLY_INPUT // 5:,}",
            limit="costly_input",
        )
    b.allow(len(text) + lines * len(wrap if isinstance(wrap, str) else "\n"), "`wordwrap`")
    return text, args, kwargs


def _list(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    if isinstance(value, str):
        b.allow(len(value) * 4 + 2, "`list`")
    return value, args, kwargs


def _batch(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    count = _arg(args, kwargs, 0, "linecount", 1)
    fill = _arg(args, kwargs, 1, "fill_with", None)
    if fill is not None and isinstance(count, int):
        b.allow(size_of(value, b.cap + 1) + count * (size_of(fill, b.cap + 1) + 1), "`batch`")
    return value, args, kwargs


def _slice(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    count = _arg(args, kwargs, 0, "slices", 1)
    fill = _arg(args, kwargs, 1, "fill_with", None)
    if isinstance(count, int):
        per = 3 + (size_of(fill, b.cap + 1) if fill is not None else 0)
        b.allow(size_of(value, b.cap + 1) + count * per, "`slice`")
    return value, args, kwargs


def _round(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    precision = _arg(args, kwargs, 0, "precision", 0)
    if isinstance(precision, int) and abs(precision) > 400:
        # `ceil`/`floor` compute 10 ** precision.
        raise ExpressionLimit(f"`round` precision {precision} is over 400", limit="int_bits")
    return value, args, kwargs


def _tojson(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    b.size(value, "`tojson`")
    indent = _arg(args, kwargs, 0, "indent", None)
    if (isinstance(indent, int) and indent > 16) or (isinstance(indent, str) and len(indent) > 16):
        raise ExpressionLimit("`tojson` indent is over 16", limit="max_value_bytes")
    return value, args, kwargs


def _sum(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    start = _arg(args, kwargs, 1, "start", 0)
    if isinstance(start, (list, tuple, str)):
        # sum() of lists copies the running total at every item: quadratic. Measure the whole.
        items = take(value, b, "`sum`")
        b.allow(size_of(start, b.cap + 1) + size_of(items, b.cap + 1), "`sum`")
        if len(items) > 1000:
            raise ExpressionLimit("`sum` of over 1,000 sequences", limit="steps")
        return items, args, kwargs
    return value, args, kwargs


def _input(b: Budget, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    b.size(value, "filter input")
    return value, args, kwargs


CHECKS: dict[str, Check] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "wordwrap": _wordwrap,
    "list": _list,
    "batch": _batch,
    "slice": _slice,
    "round": _round,
    "tojson": _tojson,
    "sum": _sum,
}


def guard(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` wrapped with its checks; Jinja's pass_context/eval_context marks are kept."""
    check = CHECKS.get(name, _input if name not in PASS else None)
    costly = name in COSTLY
    passes_arg = hasattr(func, "jinja_pass_arg")

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        b = budget()
        b.step()
        lead, rest = (args[:1], args[1:]) if passes_arg else ((), args)
        if not rest:
            return func(*args, **kwargs)
        value, extra = rest[0], tuple(rest[1:])
        if costly:
            size = b.size(value, f"`{name}`")
            if size > MAX_COSTLY_INPUT:
                raise ExpressionLimit(
                    f"`{name}` takes at most {MAX_COSTLY_INPUT:,} bytes of input, got "
                    f"about {size:,}",
                    limit="costly_input",
                )
            b.spend(size * COSTLY_WORK_FACTOR, f"`{name}`")
        if check is not None:
            value, extra, kwargs = check(b, value, extra, kwargs)
        result = func(*lead, value, *extra, **kwargs)
        if name not in PASS and isinstance(result, (str, list, tuple, Mapping)):
            b.charge(size_of(result, b.cap + 1), f"`{name}`")
        return result

    return guarded
