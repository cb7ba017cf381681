"""Operator-registered functions for `function` nodes.

Specs name functions only by their registered name, never by import path, so a tenant can
run exactly the code an operator chose to expose. A function is called as
`fn(state, ctx) -> dict | None` where `ctx` is the NodeContext (args, cancel, add_artifact,
emit, metadata) and the returned dict is the node's state update.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

NodeFunction = Callable[[dict, Any], "dict | None"]


class FunctionRegistry:
    """A name -> callable map; thread-safe for registration at import time or later."""

    def __init__(self) -> None:
        self._functions: dict[str, NodeFunction] = {}
        self._lock = threading.Lock()

    def register(self, name: str, fn: NodeFunction, *, replace: bool = False) -> NodeFunction:
        if not isinstance(name, str) or not name:
            raise ValueError("function name must be a non-empty string")
        with self._lock:
            if not replace and name in self._functions and self._functions[name] is not fn:
                raise ValueError(f"function {name!r} is already registered")
            self._functions[name] = fn
        return fn

    def unregister(self, name: str) -> None:
        with self._lock:
            self._functions.pop(name, None)

    def get(self, name: str) -> NodeFunction | None:
        return self._functions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def names(self) -> list[str]:
        return sorted(self._functions)


registry = FunctionRegistry()


def register_function(
    name: str, *, replace: bool = False
) -> Callable[[NodeFunction], NodeFunction]:
    """Decorator: expose `fn` to graph specs as `{"kind": "function", "function": name}`."""

    def decorator(fn: NodeFunction) -> NodeFunction:
        return registry.register(name, fn, replace=replace)

    return decorator


def get_function(name: str) -> NodeFunction | None:
    return registry.get(name)
