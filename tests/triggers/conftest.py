from __future__ import annotations

from typing import Any

from tests.runs.conftest import InlineQueue, chain_spec, queue  # noqa: F401 - fixtures


def echo_spec(name: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    """A small graph any input object can start."""
    return chain_spec(name, n, **extra)


__all__ = ["InlineQueue", "echo_spec", "queue"]
