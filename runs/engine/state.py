"""State reducers, initial state and input validation.

State is copy-on-write at the top level: `apply_update` returns a new dict and reducers build
new lists/dicts instead of mutating, so every earlier state (a checkpoint) stays intact without
deep-copying the whole state per step. Nodes must treat the state they receive as read-only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from .errors import NodeError, Problem

if TYPE_CHECKING:
    from .spec import GraphSpec

_MISSING: Any = object()


def _fail(reducer: str, current: Any, value: Any, expected: str) -> NodeError:
    return NodeError(
        "reducer_error",
        f"reducer {reducer!r} needs {expected}, got {type(current).__name__} "
        f"and {type(value).__name__}",
        retryable=False,
        fatal=True,
    )


def _replace(current: Any, value: Any) -> Any:
    return value


def _append(current: Any, value: Any) -> Any:
    if current is _MISSING or current is None:
        return [value]
    if not isinstance(current, list):
        raise _fail("append", current, value, "a list in state")
    return [*current, value]


def _extend(current: Any, value: Any) -> Any:
    if not isinstance(value, list):
        raise _fail("extend", current, value, "a list update")
    if current is _MISSING or current is None:
        return list(value)
    if not isinstance(current, list):
        raise _fail("extend", current, value, "a list in state")
    return [*current, *value]


def _merge(current: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        raise _fail("merge", current, value, "an object update")
    if current is _MISSING or current is None:
        return dict(value)
    if not isinstance(current, dict):
        raise _fail("merge", current, value, "an object in state")
    return {**current, **value}


def _number(name: str, current: Any, value: Any) -> None:
    for item in (current, value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise _fail(name, current, value, "numbers")


def _add(current: Any, value: Any) -> Any:
    if current is _MISSING or current is None:
        current = 0
    _number("add", current, value)
    return current + value


def _max(current: Any, value: Any) -> Any:
    if current is _MISSING or current is None:
        return value
    _number("max", current, value)
    return max(current, value)


def _min(current: Any, value: Any) -> Any:
    if current is _MISSING or current is None:
        return value
    _number("min", current, value)
    return min(current, value)


def _union(current: Any, value: Any) -> Any:
    # A list kept in first-seen order with no duplicates; a scalar update adds one item.
    items = value if isinstance(value, list) else [value]
    if current is _MISSING or current is None:
        current = []
    if not isinstance(current, list):
        raise _fail("union", current, value, "a list in state")
    result = list(current)
    for item in items:
        if item not in result:
            result.append(item)
    return result


REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "replace": _replace,
    "append": _append,
    "extend": _extend,
    "merge": _merge,
    "add": _add,
    "max": _max,
    "min": _min,
    "union": _union,
}


def apply_update(spec: GraphSpec, state: dict, update: dict) -> dict:
    """Merge `update` into `state` through each key's reducer; returns a NEW dict."""
    new = dict(state)
    if not update:
        return new
    reducers = spec.reducers
    for key, value in update.items():
        name = reducers.get(key)
        if name is None or name == "replace":
            new[key] = value
        else:
            new[key] = REDUCERS[name](state.get(key, _MISSING), value)
    return new


def initial_state(spec: GraphSpec, data: dict) -> dict:
    """The state a run starts with: the declared defaults, then the input merged by reducers."""
    state = copy.deepcopy(spec.defaults)
    return apply_update(spec, state, copy.deepcopy(dict(data or {})))


def validate_input(spec: GraphSpec, data: Any) -> list[Problem]:
    """Check run input against the spec's `input_schema` (JSON Schema draft 2020-12).

    Input must be a JSON object in any case, since it is merged into the state.
    """
    if not isinstance(data, dict):
        return [Problem("input", f"must be a JSON object, got {type(data).__name__}")]
    if not spec.input_schema:
        return []
    validator = Draft202012Validator(spec.input_schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(part) for part in error.absolute_path)
        where = f"input.{path}" if path else "input"
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    problems.append(Problem(f"{where}.{name}", "is required"))
            continue
        problems.append(Problem(where, error.message))
    return problems
