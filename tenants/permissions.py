"""Role checks on a TenantContext. The API maps Forbidden to 403 once, in config/api.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied

from tenants.models import Role

if TYPE_CHECKING:
    from tenants.auth import TenantContext


class Forbidden(PermissionDenied):
    """The caller is known but their role does not allow this.

    A PermissionDenied, so plain Django views answer 403 without a handler of their own.
    """

    def __init__(
        self,
        message: str = "You do not have permission to do this.",
        *,
        code: str = "forbidden",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


def require_role(ctx: TenantContext | None, role: str) -> TenantContext:
    """Return `ctx` if its role is `role` or higher; raise Forbidden otherwise."""
    needed = Role(role)
    if ctx is None:
        raise Forbidden("Authentication required.", details={"required_role": needed.value})
    if not ctx.has_role(needed):
        raise Forbidden(
            f"This needs the {needed.value} role or higher; the caller's role is {ctx.role}.",
            details={"required_role": needed.value, "role": str(ctx.role)},
        )
    return ctx
