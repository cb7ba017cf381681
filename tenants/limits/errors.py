"""LimitExceeded: how every limit in this package refuses an action."""

from __future__ import annotations

from typing import Any


class LimitExceeded(Exception):
    """A limit refused an action. `limit` is the limit's name; `retry_after` in seconds."""

    def __init__(
        self,
        limit: str,
        message: str,
        *,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}

    @property
    def code(self) -> str:
        return f"limit_exceeded.{self.limit}"
