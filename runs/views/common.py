"""What every dashboard view shares: the caller's tenant context, role gates, error shaping."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from runs.services import NotFound, ServiceError
from tenants.auth import SESSION_TENANT_KEY, TenantContext, context_for_user, remember_tenant
from tenants.limits import LimitExceeded
from tenants.models import Membership
from tenants.permissions import require_role

V = TypeVar("V", bound=Callable[..., Any])


class DashboardRequest(HttpRequest):
    """An HttpRequest as tenant views see it: `ctx` is set by `tenant_view`."""

    ctx: TenantContext


def resolve_context(request: HttpRequest) -> TenantContext | None:
    """The tenant the session acts on; falls back to the user's first tenant (and remembers
    it) when the session names none or one the user has left."""
    ref = request.session.get(SESSION_TENANT_KEY)
    ctx = context_for_user(request.user, ref)
    if ctx is None and ref:
        ctx = context_for_user(request.user)
    if ctx is not None and ref != str(ctx.tenant.public_id):
        remember_tenant(request.session, ctx.tenant)
    return ctx


def tenant_view(view: V) -> V:
    """Login required, and a membership: sets `request.ctx`; a user without one gets a 403
    page explaining why. Another tenant's object is a 404 (NotFound from services)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        ctx = resolve_context(request)
        if ctx is None:
            return render(request, "runs/no_tenant.html", status=403)
        request.ctx = ctx  # type: ignore[attr-defined]
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc

    return wrapped  # type: ignore[return-value]


def require_write(ctx: TenantContext) -> None:
    """Members and up may start and steer runs; viewers get a 403."""
    require_role(ctx, "member")


def require_manage(ctx: TenantContext) -> None:
    require_role(ctx, "admin")


def memberships_of(request: HttpRequest) -> list[Membership]:
    return list(
        Membership.objects.select_related("tenant")
        .filter(user_id=request.user.pk or 0, tenant__is_active=True)
        .order_by("tenant__name")
    )


def wants_json(request: HttpRequest) -> bool:
    """The dashboard's script posts forms with `Accept: application/json` to stay on the page."""
    return "application/json" in request.headers.get("Accept", "")


def error_text(exc: Exception) -> str:
    if isinstance(exc, ServiceError | LimitExceeded):
        return exc.message
    return str(exc)


def json_result(ok: bool, message: str, *, status: int = 200, **extra: Any) -> JsonResponse:
    return JsonResponse({"ok": ok, "message": message, **extra}, status=status)


def fmt_ms(ms: float | None) -> str:
    """A duration for people: 850 ms, 4.2 s, 3 m 05 s, 2 h 10 m."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"
