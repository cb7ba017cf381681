"""Domain exceptions. config/api.py maps each to an HTTP status once."""

from __future__ import annotations

import uuid
from typing import Any

from runs.events import Fenced  # noqa: F401 - re-exported for callers of services


class ServiceError(Exception):
    code = "error"
    status = 400

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class BadRequest(ServiceError):
    """A parameter of the right shape whose value the API never issued (a forged cursor)."""

    code = "bad_request"
    status = 400


class NotFound(ServiceError):
    code = "not_found"
    status = 404


def public_id(value: Any, what: str) -> uuid.UUID:
    """`value` as a public id; a value that is none is NotFound ("<what> <value> does not
    exist"), as an id of nothing would be."""
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFound(f"{what} {value} does not exist.") from exc


class Conflict(ServiceError):
    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ValidationFailed(ServiceError):
    """Bad input or spec. `details["problems"]` lists every problem with where it is."""

    code = "validation_error"
    status = 422


class BlockedByHook(ServiceError):
    code = "blocked_by_hook"
    status = 403
