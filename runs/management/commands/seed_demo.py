"""Seed a demo tenant with a dashboard login, an API key and the example graphs. Idempotent."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from runs.services import create_graph_version
from tenants.models import Membership, Role, Tenant
from tenants.services import create_api_key, create_tenant

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "graphs"
DEMO_SLUG = "demo"
DEMO_EMAIL = "demo@example.com"


class Command(BaseCommand):
    help = "Create the demo tenant, login and API key (printed once) and load the example graphs."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        port = os.environ.get("PORT", "8000")
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
        printed: list[str] = []
        if tenant is None:
            tenant = create_tenant(
                DEMO_SLUG,
                name="Demo",
                owner_email=DEMO_EMAIL,
                by="seed_demo",
                max_concurrent_runs=4,
            )
            password = secrets.token_urlsafe(12)
            user = get_user_model().objects.get(username=DEMO_EMAIL)
            # The demo owner is also an operator, so the admin console works out of the box.
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
            _, raw_key = create_api_key(tenant, name="demo", role=Role.OWNER, by="seed_demo")
            printed = [
                f"  login     {DEMO_EMAIL} / {password}",
                f"  API key   {raw_key}",
                "  (shown once; run `manage.py create_api_key demo` for another key)",
            ]
        else:
            Membership.objects.get_or_create(
                tenant=tenant,
                user=get_user_model().objects.get_or_create(
                    username=DEMO_EMAIL, defaults={"email": DEMO_EMAIL}
                )[0],
                defaults={"role": Role.OWNER},
            )
        loaded = []
        for path in sorted(EXAMPLES.glob("*.json")):
            graph = create_graph_version(tenant, json.loads(path.read_text()), by="seed_demo")
            loaded.append(f"{graph.name}@{graph.version}")
        self.stdout.write("Runyard demo")
        self.stdout.write(f"  dashboard http://localhost:{port}/")
        self.stdout.write(f"  admin     http://localhost:{port}/admin/")
        self.stdout.write(f"  API docs  http://localhost:{port}/api/v1/docs")
        for line in printed or ["  login and API key were printed when the demo was first seeded"]:
            self.stdout.write(line)
        self.stdout.write(f"  graphs    {', '.join(loaded) or '(none found)'}")
