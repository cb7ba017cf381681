"""set_tenant_limits: every name and value checked, only limit columns written, audited."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tenants.auth import TenantContext
from tenants.models import AuditLog, Tenant
from tenants.services import (
    LIMIT_FIELDS,
    create_api_key,
    set_tenant_limits,
    tenant_limits_dict,
)


def test_string_values_are_parsed(tenant: Tenant, staff: Any) -> None:
    set_tenant_limits(
        tenant,
        {
            "max_concurrent_runs": "3",
            "max_tokens": "100000",
            "max_cost_usd": "1.25",
            "warn_ratio": "0.5",
            "http_allowed_hosts": " API.example.com, *.example.org ,api.example.com",
            "http_allow_private": "yes",
        },
        by=staff,
    )
    tenant.refresh_from_db()
    assert tenant.max_concurrent_runs == 3
    assert tenant.max_tokens == 100000
    assert tenant.max_cost_usd == Decimal("1.25")
    assert tenant.warn_ratio == Decimal("0.5")
    assert tenant.http_allowed_hosts == ["api.example.com", "*.example.org"]
    assert tenant.http_allow_private is True


def test_none_clears_a_limit(tenant: Tenant) -> None:
    set_tenant_limits(tenant, {"max_tokens": 10, "runs_per_minute": 5})
    set_tenant_limits(tenant, {"max_tokens": "none", "runs_per_minute": None})
    tenant.refresh_from_db()
    assert tenant.max_tokens is None
    assert tenant.runs_per_minute is None


def test_the_passed_tenant_is_updated_too(tenant: Tenant) -> None:
    returned = set_tenant_limits(tenant, {"max_steps": 7})
    assert returned.max_steps == 7
    assert tenant.max_steps == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_tokenz": 1}, "unknown limit 'max_tokenz'; known limits: max_concurrent_runs"),
        ({"running_count": 0}, "unknown limit 'running_count'"),
        ({"max_concurrent_runs": "none"}, "max_concurrent_runs cannot be unlimited"),
        ({"max_steps": "-1"}, "max_steps must be between 0 and"),
        ({"max_steps": "1.5"}, "max_steps must be a whole number"),
        ({"max_steps": True}, "max_steps must be a whole number"),
        ({"max_steps": "lots"}, "max_steps must be a whole number or 'none'"),
        ({"max_wall_seconds": 2**31}, "max_wall_seconds must be between 0 and 2147483647"),
        ({"max_cost_usd": "abc"}, "max_cost_usd must be a number"),
        ({"max_cost_usd": "-1"}, "max_cost_usd must be at least 0"),
        ({"max_cost_usd": "0.0000001"}, "at most 6 decimal places"),
        ({"max_cost_usd": "1000000"}, "less than 1000000"),
        ({"max_cost_usd": "NaN"}, "finite"),
        ({"warn_ratio": "0"}, "warn_ratio must be above 0 and at most 1"),
        ({"warn_ratio": "1.01"}, "warn_ratio must be above 0 and at most 1"),
        ({"warn_ratio": "none"}, "warn_ratio cannot be unlimited"),
        ({"http_allow_private": "maybe"}, "http_allow_private must be true or false"),
        ({"http_allowed_hosts": "https://a.com/x"}, "is not a host name"),
        ({"http_allowed_hosts": 5}, "comma-separated list"),
    ],
)
def test_bad_names_and_values_are_refused_clearly(
    tenant: Tenant, values: dict[str, Any], message: str
) -> None:
    before = tenant_limits_dict(tenant)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        set_tenant_limits(tenant, values)
    tenant.refresh_from_db()
    assert tenant_limits_dict(tenant) == before
    assert not AuditLog.objects.exists()


def test_one_bad_value_writes_none_of_the_others(tenant: Tenant) -> None:
    with pytest.raises(ValueError):
        set_tenant_limits(tenant, {"max_tokens": 5, "warn_ratio": 2})
    tenant.refresh_from_db()
    assert tenant.max_tokens is None


def test_warn_ratio_of_one_is_allowed(tenant: Tenant) -> None:
    set_tenant_limits(tenant, {"warn_ratio": 1})
    tenant.refresh_from_db()
    assert tenant.warn_ratio == Decimal(1)


def test_changes_are_audited_with_old_and_new_values(tenant: Tenant, staff: Any) -> None:
    set_tenant_limits(
        tenant, {"max_tokens": "500", "max_cost_usd": "2", "max_steps": 1000}, by=staff
    )

    row = AuditLog.objects.get()
    assert row.action == "tenant.limits"
    assert row.tenant == tenant
    assert row.actor == staff
    assert (row.status_before, row.status_after) == ("", "")
    # max_steps was already 1000: not a change.
    assert row.data == {"changed": {"max_tokens": [None, 500], "max_cost_usd": [None, 2.0]}}


def test_setting_the_same_values_writes_no_audit_row(tenant: Tenant) -> None:
    set_tenant_limits(tenant, {"max_concurrent_runs": tenant.max_concurrent_runs})
    assert not AuditLog.objects.exists()


def test_admission_counters_changed_meanwhile_are_not_overwritten(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(running_count=4, queued_count=9)
    assert tenant.running_count == 0  # this instance is stale
    set_tenant_limits(tenant, {"max_concurrent_runs": 2})
    tenant.refresh_from_db()
    assert (tenant.running_count, tenant.queued_count, tenant.max_concurrent_runs) == (4, 9, 2)


def test_limits_dict_is_json_safe_and_complete(tenant: Tenant) -> None:
    set_tenant_limits(tenant, {"max_cost_usd": "0.1", "daily_cost_budget_usd": "12.345678"})
    tenant.refresh_from_db()
    limits = tenant_limits_dict(tenant)

    assert list(limits) == list(LIMIT_FIELDS)
    assert json.loads(json.dumps(limits)) == limits
    assert limits["max_cost_usd"] == 0.1
    assert limits["daily_cost_budget_usd"] == 12.345678
    assert limits["warn_ratio"] == 0.8
    assert limits["max_tokens"] is None
    assert limits["http_allowed_hosts"] == []
    assert limits["http_allow_private"] is False


def test_an_api_caller_is_recorded_by_its_key_prefix(tenant: Tenant) -> None:
    key, _ = create_api_key(tenant, role="admin")
    set_tenant_limits(tenant, {"max_steps": 9}, by=TenantContext(tenant, key.role, api_key=key))
    row = AuditLog.objects.get(action="tenant.limits")
    assert (row.actor, row.actor_label) == (None, f"api_key:{key.prefix}")
