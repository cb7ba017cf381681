"""Checks on JSON values shared by validation code, and what the database can store.

PostgreSQL's jsonb (and SQLite's JSON_VALID check) refuse NaN and infinite floats, and jsonb
refuses U+0000 in strings and keys. Such a value reaching a commit fails the whole step
transaction, so node output is checked where the engine merges it (`storable_size`) and
failing the node there keeps retries and `on_error` edges working.
"""

from __future__ import annotations

import json
import math
from typing import Any

# A NUL character once json.dumps has escaped it; "\\u0000" (escaped backslash) also matches,
# so a hit is confirmed by a walk of the value.
_NUL_ESCAPED = "\\u0000"

# Compact, ASCII-only JSON: its length is an upper bound of the value's UTF-8 JSON size.
_dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=True).encode


def is_number(value: Any) -> bool:
    """int or float, but not bool (which JSON keeps apart)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Unstorable(ValueError):
    """A value the database cannot store; `path` names where (e.g. `items[2].name`)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path or 'the value'}: {reason}")


def _child(path: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def find_unstorable(value: Any) -> tuple[str, str] | None:
    """The first (path, reason) in `value` that JSON in the database cannot hold, or None.

    Iterative, so a deeply nested value cannot exhaust the stack; each container is visited
    once, so a cycle ends the walk (and is then reported by `storable_size`).
    """
    stack: list[tuple[str, Any]] = [("", value)]
    seen: set[int] = set()
    while stack:
        path, item = stack.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, f"{item!r} is not a JSON number"
        elif isinstance(item, str):
            if "\x00" in item:
                return path, "a string contains the NUL character (\\u0000)"
        elif isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if isinstance(key, str):
                        if "\x00" in key:
                            return _child(path, repr(key)), "a key contains the NUL character"
                    elif isinstance(key, float) and not math.isfinite(key):
                        return _child(path, repr(key)), f"key {key!r} is not a JSON number"
                    elif not (key is None or isinstance(key, (int, float, bool))):
                        return path, f"key {key!r} ({type(key).__name__}) is not a string"
                    children.append((_child(path, key), child))
                stack.extend(reversed(children))
            else:
                stack.extend(
                    (_child(path, i), child) for i, child in reversed(list(enumerate(item)))
                )
        else:
            return path, f"a {type(item).__name__} is not a JSON value"
    return None


def storable_size(value: Any) -> int:
    """The size of `value` as compact ASCII JSON (at least its UTF-8 JSON size), or raise
    Unstorable naming the first bad path. One C-speed dump in the common case."""
    try:
        text = _dumps(value)
    except (ValueError, TypeError, RecursionError) as exc:
        found = find_unstorable(value)
        if found is None:
            raise Unstorable("", f"not serialisable as JSON ({exc})") from None
        raise Unstorable(*found) from None
    if _NUL_ESCAPED in text:
        found = find_unstorable(value)
        if found is not None:
            raise Unstorable(*found)
    return len(text)


def _no_constant(name: str) -> Any:
    raise Unstorable("", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity
        raise Unstorable("", f"{text} is out of range for a JSON number")
    return value


def loads_storable(text: str | bytes) -> Any:
    """json.loads for what clients send: Python's accepts NaN, Infinity and numbers that
    overflow to infinity, and a JSON string may carry U+0000; all raise Unstorable (a
    ValueError) here, with the path of a NUL."""
    data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    # Strict JSON has a NUL only as the escape \u0000: no escape, no walk.
    escaped = b"\\u0000" if isinstance(text, bytes) else "\\u0000"
    if escaped in text:  # type: ignore[operator]
        found = find_unstorable(data)
        if found is not None:
            raise Unstorable(*found)
    return data


def storable_copy(value: Any) -> Any:
    """`value` with what the database cannot store replaced: NaN and infinities by their
    names as strings, NUL characters dropped, other objects by their repr. For messages and
    event data, which must be written even when a node produced garbage."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.replace("\x00", "")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {
            (storable_copy(k) if isinstance(k, str) else k if is_number(k) else str(k)): (
                storable_copy(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [storable_copy(v) for v in value]
    return repr(value).replace("\x00", "")
