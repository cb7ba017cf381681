"""API keys: shown once, stored hashed behind a visible prefix, refused when wrong or revoked."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey, AuditLog, Role, Tenant, hash_key
from tenants.services import authenticate_api_key, create_api_key, revoke_api_key

KEY_RE = re.compile(r"^ry_([A-Za-z0-9]{12})_[A-Za-z0-9_-]{40,}$")


def test_raw_key_is_returned_once_and_only_its_hash_is_stored(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant, name="ci", role=Role.ADMIN)

    match = KEY_RE.match(raw)
    assert match, raw
    assert key.prefix == match.group(1)
    assert len(key.prefix) == ApiKey.PREFIX_LEN
    assert key.hashed == hash_key(raw)
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(raw in str(value) for value in stored.values())
    assert (key.name, key.role, key.tenant) == ("ci", Role.ADMIN, tenant)


def test_every_key_is_different(tenant: Tenant) -> None:
    raws = {create_api_key(tenant)[1] for _ in range(5)}
    assert len(raws) == 5
    assert len(set(ApiKey.objects.values_list("prefix", flat=True))) == 5


def test_creating_a_key_is_audited_without_the_key(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant, name="deploy")
    row = AuditLog.objects.get(action="api_key.created")
    assert row.tenant == tenant
    assert row.target_id == str(key.public_id)
    assert row.data == {"prefix": key.prefix, "name": "deploy", "role": "member"}
    assert raw not in str(row.data)


def test_unknown_role_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="unknown role 'root'"):
        create_api_key(tenant, role="root")
    assert not ApiKey.objects.exists()


def test_the_right_key_authenticates_with_its_tenant(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant, role=Role.VIEWER)
    found = authenticate_api_key(raw)
    assert found == key
    assert found is not None and found.tenant == tenant and found.role == Role.VIEWER


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda raw: raw + "x",
        lambda raw: raw.replace("ry_", "rx_", 1),
        lambda raw: raw.split("_", 2)[1],  # the prefix alone
        lambda raw: "",
        lambda raw: "ry__",
        lambda raw: "Bearer " + raw,
        lambda raw: raw * 10,
    ],
)
def test_wrong_keys_are_refused(tenant: Tenant, mangle: Any) -> None:
    _, raw = create_api_key(tenant)
    assert authenticate_api_key(mangle(raw)) is None


def test_revoked_key_is_refused_and_revocation_is_audited_once(tenant: Tenant, staff: Any) -> None:
    key, raw = create_api_key(tenant)
    revoke_api_key(key, by=staff)
    revoke_api_key(key, by=staff)

    assert key.revoked_at is not None
    assert authenticate_api_key(raw) is None
    rows = AuditLog.objects.filter(action="api_key.revoked")
    assert rows.count() == 1
    assert rows.get().actor == staff
    assert rows.get().actor_label == "operator@example.com"


def test_key_of_an_inactive_tenant_is_refused(tenant: Tenant) -> None:
    _, raw = create_api_key(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    assert authenticate_api_key(raw) is None


def test_a_key_of_tenant_b_never_authenticates_as_tenant_a(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    key_a, raw_a = create_api_key(tenant)
    key_b, raw_b = create_api_key(other_tenant)

    found = authenticate_api_key(raw_b)
    assert found is not None and found.tenant == other_tenant

    # B's secret behind A's visible prefix matches nothing.
    forged = f"ry_{key_a.prefix}_{raw_b.split('_', 2)[2]}"
    assert authenticate_api_key(forged) is None


def test_last_used_at_is_written_at_most_once_a_minute(
    tenant: Tenant, django_assert_num_queries: Any
) -> None:
    key, raw = create_api_key(tenant)
    assert key.last_used_at is None

    first = authenticate_api_key(raw)
    assert first is not None and first.last_used_at is not None
    key.refresh_from_db()
    assert key.last_used_at == first.last_used_at

    # Within the minute: one SELECT, no UPDATE.
    with django_assert_num_queries(1):
        again = authenticate_api_key(raw)
    assert again is not None and again.last_used_at == first.last_used_at

    old = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=old)
    with django_assert_num_queries(2):
        later = authenticate_api_key(raw)
    assert later is not None and later.last_used_at is not None and later.last_used_at > old


def test_a_concurrent_writer_loses_the_guarded_last_used_update(tenant: Tenant) -> None:
    key, raw = create_api_key(tenant)
    stale = authenticate_api_key(raw)
    assert stale is not None
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    fresh = ApiKey.objects.get(pk=key.pk).last_used_at
    # A request that read the row before the other write: its guarded UPDATE matches nothing.
    stale.last_used_at = None
    services._touch_last_used(stale)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == fresh


def test_hashes_are_compared_in_constant_time(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, raw = create_api_key(tenant)
    calls: list[tuple[str, str]] = []
    real = services.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(services.hmac, "compare_digest", spy)
    assert authenticate_api_key(raw) == key
    assert authenticate_api_key(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert calls[0] == (key.hashed, hash_key(raw))
    assert len(calls) == 2


def test_raw_keys_never_reach_the_logs(tenant: Tenant, caplog: pytest.LogCaptureFixture) -> None:
    key, raw = create_api_key(tenant)
    secret = raw.split("_", 2)[2]
    with caplog.at_level(logging.DEBUG):
        authenticate_api_key(raw)
        authenticate_api_key(raw[:-1] + ("A" if raw[-1] != "A" else "B"))
        revoke_api_key(key)
        authenticate_api_key(raw)
        authenticate_api_key("garbage-" + secret)
    assert caplog.records, "refusals are logged (by prefix)"
    assert secret not in caplog.text
    assert secret[:-1] not in caplog.text
