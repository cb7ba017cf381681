"""Seed a demo tenant with a dashboard login, an API key and the example graphs. Idempotent.

It prints what a person needs next, with the real port: the dashboard's address and lines to
paste into a shell (`export BASE=...`, `export KEY=...`, curl). The key and the password are
shown once, when created; `--new-key` and `--reset-password` make new ones later.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from runs.services import create_graph_version
from tenants.models import Membership, Role, Tenant
from tenants.services import create_api_key, create_tenant

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "graphs"
DEMO_SLUG = "demo"
DEMO_EMAIL = "demo@example.com"
MANAGE = ".venv/bin/python manage.py"
TRY_INPUT = {"graph": "support-triage", "input": {"text": "Our site is down for every user!"}}


def base_url() -> str:
    """Where this machine's `make run` answers: $RUNYARD_BIND (loopback when it binds every
    address) and $PORT, as platform/Procfile passes them to daphne."""
    host = os.environ.get("RUNYARD_BIND", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a name to connect to, not one to bind
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '8000')}"


class Command(BaseCommand):
    help = "Create the demo tenant, login and API key (printed once) and load the example graphs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="give the demo login a new random password and print it",
        )
        parser.add_argument(
            "--new-key",
            action="store_true",
            help="create another demo API key and print only the key: "
            "export KEY=$(.venv/bin/python manage.py seed_demo --new-key)",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if options["reset_password"] or options["new_key"]:
            tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
            if tenant is None:
                raise CommandError("There is no demo tenant yet: run `make run` first.")
            if options["new_key"]:
                _, raw_key = create_api_key(tenant, name="demo", role=Role.OWNER, by="seed_demo")
                self.stdout.write(raw_key)
                self.stderr.write("A new demo API key (shown once).")
            if options["reset_password"]:
                self.stdout.write(f"login     {DEMO_EMAIL} / {self._reset_password()}")
            return
        self._seed()

    def _reset_password(self) -> str:
        password = secrets.token_urlsafe(12)
        user = get_user_model().objects.get(username=DEMO_EMAIL)
        user.set_password(password)
        user.is_active = True
        user.save()
        return password

    def _seed(self) -> None:
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
        password = raw_key = None
        if tenant is None:
            tenant = create_tenant(
                DEMO_SLUG,
                name="Demo",
                owner_email=DEMO_EMAIL,
                by="seed_demo",
                max_concurrent_runs=4,
            )
            user = get_user_model().objects.get(username=DEMO_EMAIL)
            # The demo owner is also an operator, so the admin console works out of the box.
            user.is_staff = user.is_superuser = True
            user.save()
            password = self._reset_password()
            _, raw_key = create_api_key(tenant, name="demo", role=Role.OWNER, by="seed_demo")
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
        self._print(base_url(), loaded, password, raw_key)

    def _print(self, base: str, loaded: list[str], password: str | None, key: str | None) -> None:
        write = self.stdout.write
        write("Runyard demo")
        write(f"  dashboard {base}/")
        write(f"  admin     {base}/admin/")
        write(f"  API docs  {base}/api/v1/docs")
        if password:
            write(f"  login     {DEMO_EMAIL} / {password}   (shown once)")
        if key:
            write(f"  API key   {key}   (shown once)")
        else:
            write(f"  login     {DEMO_EMAIL} (password shown at the first run; a new one:")
            write(f"            {MANAGE} seed_demo --reset-password)")
        write(f"  graphs    {', '.join(loaded) or '(none found)'}")
        write("")
        write("Try the API from another terminal (paste these lines):")
        write(f"  export BASE={base}")
        if key:
            write(f"  export KEY={key}")
        else:
            write(f"  export KEY=$({MANAGE} seed_demo --new-key)")
        write('  curl -s -H "Authorization: Bearer $KEY" $BASE/api/v1/graphs')
        write(
            '  curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" '
            f"-d '{json.dumps(TRY_INPUT)}' $BASE/api/v1/runs"
        )
        write("")
