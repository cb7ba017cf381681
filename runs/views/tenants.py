"""Switching the tenant a dashboard session acts on."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from runs.forms import TenantSwitchForm
from tenants.auth import context_for_user, remember_tenant


@require_POST
@login_required
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Remember the chosen tenant, if the user is a member of it, and go to its runs (the
    page the user was on belongs to the other tenant)."""
    form = TenantSwitchForm(request.POST)
    if not form.is_valid():
        raise Http404("No such tenant.")
    ctx = context_for_user(request.user, str(form.cleaned_data["tenant"]))
    if ctx is None:
        raise Http404("No such tenant.")
    remember_tenant(request.session, ctx.tenant)
    messages.info(request, f"Now working in {ctx.tenant.name}.")
    return redirect(reverse("runs:list"))
