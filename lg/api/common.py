"""What every /lg route shares: the caller's role, and the JSON body as a bounded object."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from lg.errors import Refused
from runs.engine.values import Unstorable, loads_storable
from tenants.auth import TenantContext
from tenants.models import Role
from tenants.permissions import require_role

MAX_ID = 100


def reader(request: HttpRequest) -> TenantContext:
    return require_role(request.auth, Role.VIEWER)  # type: ignore[attr-defined]


def writer(request: HttpRequest) -> TenantContext:
    return require_role(request.auth, Role.MEMBER)  # type: ignore[attr-defined]


def manager(request: HttpRequest) -> TenantContext:
    return require_role(request.auth, Role.ADMIN)  # type: ignore[attr-defined]


def body(request: HttpRequest, *, array: bool = False) -> Any:
    """The request's JSON body (an object, or with `array` a list); empty means {}."""
    limit = int(settings.RUNYARD["MAX_INPUT_BYTES"]) * 2
    if len(request.body) > limit:
        raise Refused(f"The request body is over {limit} bytes.", status=413)
    if not request.body.strip():
        return [] if array else {}
    try:
        data = loads_storable(request.body)
    except Unstorable as exc:
        raise Refused(
            f"The request body holds a value that cannot be stored: {exc.reason}.", status=400
        ) from None
    except (ValueError, RecursionError):
        raise Refused("The request body is not valid JSON.", status=400) from None
    if array:
        if not isinstance(data, list):
            raise Refused("The request body must be a JSON array.")
        return data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Refused("The request body must be a JSON object.")
    return data


def ident(value: str) -> str:
    if len(value) > MAX_ID:
        raise Refused(f"An id is at most {MAX_ID} characters.", status=404)
    return value
