"""manage.py create_api_key SLUG [--name N] [--role R]: prints a new key, once."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.models import Role, Tenant
from tenants.services import create_api_key


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it. The key is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the tenant's slug")
        parser.add_argument("--name", default="default", help="a label for the key")
        parser.add_argument("--role", default=Role.MEMBER.value, choices=Role.values)
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenant = Tenant.objects.get(slug=options["slug"])
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {options['slug']!r}") from None
        try:
            key, raw = create_api_key(tenant, name=options["name"], role=options["role"], by="cli")
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            payload = {
                "key": raw,
                "prefix": key.prefix,
                "id": str(key.public_id),
                "tenant": tenant.slug,
                "name": key.name,
                "role": key.role,
            }
            self.stdout.write(json.dumps(payload))
        else:
            self.stdout.write(f"key: {raw}")
            self.stdout.write(f"prefix: {key.prefix}")
            self.stdout.write(f"tenant: {tenant.slug}  name: {key.name}  role: {key.role}")
        self.stderr.write("Store this key now: it is shown only once, and only its hash is kept.")
