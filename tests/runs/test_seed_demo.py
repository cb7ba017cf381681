from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.test import Client

from runs.models import Graph
from tenants.auth import context_for_key
from tenants.models import ApiKey, Tenant


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_prints_credentials_once(capsys) -> None:
    call_command("seed_demo")
    first = capsys.readouterr().out
    password = re.search(r"login\s+demo@example.com / (\S+)", first).group(1)
    key = re.search(r"API key\s+(\S+)", first).group(1)
    assert context_for_key(key).tenant.slug == "demo"
    graphs = Graph.objects.filter(tenant__slug="demo").count()
    assert graphs >= 3
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert key not in second and password not in second
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1
    assert (
        Graph.objects.filter(tenant__slug="demo").count() == graphs
    )  # same specs, no new versions
    client = Client()
    assert client.login(username="demo@example.com", password=password)
    assert client.get("/admin/").status_code == 200
