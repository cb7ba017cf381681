"""create_tenant, create_api_key and tenant_limits: their output and their errors."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import ApiKey, AuditLog, Role, Tenant, hash_key
from tenants.services import authenticate_api_key

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- create_tenant ----------------------------------------------------------------------------


def test_create_tenant_prints_the_tenant_as_json() -> None:
    out, _ = run("create_tenant", "acme", "--name", "Acme Inc", "--owner", "boss@acme.test")
    body = json.loads(out)

    tenant = Tenant.objects.get(slug="acme")
    assert body["id"] == str(tenant.public_id)
    assert (body["slug"], body["name"], body["owner"]) == ("acme", "Acme Inc", "boss@acme.test")
    assert body["limits"]["max_concurrent_runs"] == 10
    assert not get_user_model().objects.get(username="boss@acme.test").has_usable_password()
    assert AuditLog.objects.get(action="tenant.created").actor_label == "cli"


def test_create_tenant_without_owner() -> None:
    body = json.loads(run("create_tenant", "acme", "--name", "Acme")[0])
    assert body["owner"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice-co", "--name", "Again"], "'alice-co' already exists"),
        (["bad slug", "--name", "X"], "must be letters, digits"),
        (["acme", "--name", "X", "--owner", "nope"], "not an e-mail"),
        (["acme"], "--name"),
    ],
)
def test_create_tenant_errors(tenant: Tenant, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_tenant", *args)


# --- create_api_key ---------------------------------------------------------------------------


def test_create_api_key_prints_the_key_once_with_its_prefix(tenant: Tenant) -> None:
    out, err = run("create_api_key", "alice-co", "--name", "ci", "--role", "admin")
    lines = dict(line.split(": ", 1) for line in out.splitlines()[:2])
    raw, prefix = lines["key"], lines["prefix"]

    key = ApiKey.objects.get()
    assert key.prefix == prefix and raw.startswith(f"ry_{prefix}_")
    assert key.hashed == hash_key(raw)
    assert (key.name, key.role, key.tenant) == ("ci", Role.ADMIN, tenant)
    assert authenticate_api_key(raw) == key
    assert "shown only once" in err


def test_create_api_key_json(tenant: Tenant) -> None:
    body = json.loads(run("create_api_key", "alice-co", "--json")[0])
    key = ApiKey.objects.get()
    assert body["prefix"] == key.prefix
    assert body["id"] == str(key.public_id)
    assert (body["tenant"], body["name"], body["role"]) == ("alice-co", "default", "member")
    assert authenticate_api_key(body["key"]) == key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "no tenant with slug 'nobody'"),
        (["alice-co", "--role", "root"], "invalid choice: 'root'"),
    ],
)
def test_create_api_key_errors(tenant: Tenant, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_api_key", *args)
    assert not ApiKey.objects.exists()


# --- tenant_limits ----------------------------------------------------------------------------


def test_tenant_limits_prints_the_limits(tenant: Tenant) -> None:
    body = json.loads(run("tenant_limits", "alice-co")[0])
    assert body["max_concurrent_runs"] == 10
    assert body["max_tokens"] is None
    assert body["warn_ratio"] == 0.8
    assert not AuditLog.objects.exists()


def test_tenant_limits_sets_values_and_prints_the_result(tenant: Tenant) -> None:
    out, _ = run(
        "tenant_limits",
        "alice-co",
        "--set",
        "max_tokens=5000",
        "max_cost_usd=1.5",
        "--set",
        "http_allowed_hosts=a.example.com,b.example.com",
    )
    body = json.loads(out)
    assert body["max_tokens"] == 5000
    assert body["max_cost_usd"] == 1.5
    assert body["http_allowed_hosts"] == ["a.example.com", "b.example.com"]
    tenant.refresh_from_db()
    assert tenant.max_tokens == 5000
    row = AuditLog.objects.get(action="tenant.limits")
    assert row.actor_label == "cli"
    assert row.data["changed"]["max_tokens"] == [None, 5000]


def test_tenant_limits_none_clears(tenant: Tenant) -> None:
    run("tenant_limits", "alice-co", "--set", "max_tokens=10")
    body = json.loads(run("tenant_limits", "alice-co", "--set", "max_tokens=none")[0])
    assert body["max_tokens"] is None
    tenant.refresh_from_db()
    assert tenant.max_tokens is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "no tenant with slug 'nobody'"),
        (["alice-co", "--set", "max_tokenz=5"], "unknown limit 'max_tokenz'; known limits"),
        (["alice-co", "--set", "max_tokens=lots"], "max_tokens must be a whole number"),
        (["alice-co", "--set", "warn_ratio=1.5"], "warn_ratio must be above 0 and at most 1"),
        (["alice-co", "--set", "max_tokens"], "--set expects NAME=VALUE, got 'max_tokens'"),
        (["alice-co", "--set", "max_tokens=1", "max_tokens=2"], "more than once"),
    ],
)
def test_tenant_limits_errors(tenant: Tenant, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("tenant_limits", *args)
    tenant.refresh_from_db()
    assert tenant.max_tokens is None
    assert not AuditLog.objects.exists()


def test_tenant_limits_help_names_every_limit() -> None:
    from tenants.management.commands.tenant_limits import Command

    text = Command().create_parser("manage.py", "tenant_limits").format_help()
    assert "max_concurrent_runs" in text and "http_allow_private" in text
