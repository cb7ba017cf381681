"""Checks on JSON values shared by validation code."""

from __future__ import annotations

from typing import Any


def is_number(value: Any) -> bool:
    """int or float, but not bool (which JSON keeps apart)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
