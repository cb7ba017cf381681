from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

from runs.status import ACTIVE, TERMINAL

if TYPE_CHECKING:
    from tenants.models import Tenant


class TenantScopedQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> TenantScopedQuerySet:
        return self.filter(tenant=tenant)


class RunQuerySet(TenantScopedQuerySet):
    def active(self) -> RunQuerySet:
        return self.filter(status__in=ACTIVE)

    def terminal(self) -> RunQuerySet:
        return self.filter(status__in=TERMINAL)
