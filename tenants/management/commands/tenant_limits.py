"""manage.py tenant_limits SLUG [--set NAME=VALUE ...]: shows (and changes) a tenant's limits."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.models import Tenant
from tenants.services import LIMIT_FIELDS, set_tenant_limits, tenant_limits_dict


class Command(BaseCommand):
    help = (
        "Print a tenant's limits as JSON; --set NAME=VALUE changes them first "
        "(VALUE 'none' means unlimited). Limits: " + ", ".join(LIMIT_FIELDS)
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the tenant's slug")
        parser.add_argument(
            "--set",
            dest="assignments",
            action="extend",
            nargs="+",
            default=[],
            metavar="NAME=VALUE",
            help="e.g. --set max_tokens=100000 max_cost_usd=none http_allowed_hosts=a.com,b.com",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenant = Tenant.objects.get(slug=options["slug"])
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {options['slug']!r}") from None
        values: dict[str, str] = {}
        for assignment in options["assignments"]:
            name, sep, value = assignment.partition("=")
            name = name.strip()
            if not sep or not name:
                raise CommandError(f"--set expects NAME=VALUE, got {assignment!r}")
            if name in values:
                raise CommandError(f"--set names {name!r} more than once")
            values[name] = value
        if values:
            try:
                tenant = set_tenant_limits(tenant, values, by="cli")
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(tenant_limits_dict(tenant), indent=2))
