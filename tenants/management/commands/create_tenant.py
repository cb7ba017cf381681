"""manage.py create_tenant SLUG --name NAME [--owner EMAIL]: prints the new tenant as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.services import create_tenant, tenant_limits_dict


class Command(BaseCommand):
    help = "Create a tenant (optionally with an owner, created if needed) and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="URL-safe identifier, e.g. acme")
        parser.add_argument("--name", required=True, help="display name")
        parser.add_argument(
            "--owner",
            metavar="EMAIL",
            help="owner's e-mail; a user with that username is created (no password) if missing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenant = create_tenant(
                options["slug"], name=options["name"], owner_email=options["owner"], by="cli"
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        owner = tenant.memberships.filter(role="owner").select_related("user").first()
        payload = {
            "id": str(tenant.public_id),
            "slug": tenant.slug,
            "name": tenant.name,
            "is_active": tenant.is_active,
            "created_at": tenant.created_at.isoformat(),
            "owner": owner.user.get_username() if owner else None,
            "limits": tenant_limits_dict(tenant),
        }
        self.stdout.write(json.dumps(payload, indent=2))
