"""What every runs endpoint shares: the caller's context, role checks and size limits."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from runs.services.errors import ServiceError
from tenants.auth import TenantContext
from tenants.models import Role
from tenants.permissions import require_role


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    status = 413


def caller(request: HttpRequest) -> TenantContext:
    """Any authenticated role: viewers read."""
    return require_role(request.auth, Role.VIEWER)  # type: ignore[attr-defined]


def member(request: HttpRequest) -> TenantContext:
    """Members start, cancel and answer runs."""
    return require_role(request.auth, Role.MEMBER)  # type: ignore[attr-defined]


def admin(request: HttpRequest) -> TenantContext:
    """Admins manage graphs."""
    return require_role(request.auth, Role.ADMIN)  # type: ignore[attr-defined]


def _too_large(what: str, size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is {size} bytes; the limit is {limit} bytes.",
        details={"field": what, "size_bytes": size, "limit_bytes": limit},
    )


def ensure_json_size(value: Any, field: str, *, limit_setting: str = "MAX_INPUT_BYTES") -> None:
    """Refuse `value` with 413 when its compact JSON is over the configured limit."""
    if value is None:
        return
    limit = int(settings.RUNYARD[limit_setting])
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise _too_large(field, size, limit)


def ensure_body_size(request: HttpRequest, field: str, *, limit_setting: str) -> None:
    limit = int(settings.RUNYARD[limit_setting])
    size = len(request.body)
    if size > limit:
        raise _too_large(field, size, limit)
