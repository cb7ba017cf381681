"""Dashboard: the tenant's webhooks (list, add, delete), recent deliveries, the signing secret
(shown in full once, when made or rotated). Anyone in the tenant reads; admins change."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from runs.services import ServiceError
from runs.views.common import require_manage, tenant_view
from runs.views.pages import page
from tenants.auth import TenantContext
from tenants.models import Tenant
from webhooks import services
from webhooks.models import EVENTS, URL_MAX_LENGTH, Delivery, Subscription

RECENT_DELIVERIES = 20


class SubscriptionForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=URL_MAX_LENGTH,
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.example.com/runyard"}),
        help_text="Must pass the tenant's HTTP allow-list and private-address rule.",
    )
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENTS],
        initial=list(EVENTS),
        widget=forms.CheckboxSelectMultiple,
    )
    include_state = forms.BooleanField(
        label="Include the run's state", required=False, initial=True
    )
    description = forms.CharField(max_length=200, required=False)


def _page(
    request: HttpRequest,
    form: SubscriptionForm | None = None,
    *,
    new_secret: str = "",
    status: int = 200,
) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    tenant = Tenant.objects.get(pk=ctx.tenant.pk)  # the secret as stored now
    return page(
        request,
        "webhooks/webhook_list.html",
        {
            "subscriptions": Subscription.objects.filter(tenant=tenant).order_by("id"),
            "deliveries": Delivery.objects.filter(tenant=tenant).order_by("-id")[
                :RECENT_DELIVERIES
            ],
            "form": form or SubscriptionForm(),
            "masked_secret": services.masked_secret(tenant),
            "new_secret": new_secret,
            "events": EVENTS,
        },
        nav="webhooks",
        status=status,
    )


@tenant_view
def webhook_list(request: HttpRequest) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    if request.method != "POST":
        return _page(request)
    require_manage(ctx)
    form = SubscriptionForm(request.POST)
    if form.is_valid():
        try:
            sub = services.create_subscription(
                ctx.tenant,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                include_state=form.cleaned_data["include_state"],
                description=form.cleaned_data["description"],
            )
        except ServiceError as exc:
            form.add_error("url" if exc.details.get("field") == "url" else None, exc.message)
        else:
            messages.success(request, f"Webhook added: {sub.url}")
            return redirect("webhooks:list")
    return _page(request, form, status=422)


@require_POST
@tenant_view
def webhook_delete(request: HttpRequest, webhook_id: str) -> HttpResponse:
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    require_manage(ctx)
    sub = services.get_subscription(ctx.tenant, webhook_id)
    services.delete_subscription(sub)
    messages.success(request, f"Webhook deleted: {sub.url}")
    return redirect("webhooks:list")


@require_POST
@tenant_view
def secret_rotate(request: HttpRequest) -> HttpResponse:
    """Rendered, not redirected: the new secret is on this one page and stored nowhere else
    for the browser (no message cookie, no session)."""
    ctx: TenantContext = request.ctx  # type: ignore[attr-defined]
    require_manage(ctx)
    secret = services.rotate_secret(ctx.tenant)
    response = _page(request, new_secret=secret)
    response["Cache-Control"] = "no-store"
    return response
