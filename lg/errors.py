"""The protocol's errors: `{"detail": ...}` with the status LangGraph clients act on."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """An option or request the protocol allows and Runyard does not honour: 422, saying why."""

    status = 422

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status


def not_found(what: str, ident: Any) -> Refused:
    return Refused(f"{what} {ident} not found.", status=404)


def conflict(detail: str) -> Refused:
    return Refused(detail, status=409)
