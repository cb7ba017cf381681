"""Schedules in the admin: the changelist's columns (last and next fire, the latest fires'
runs), the read-only page with fires inline, enable/disable actions and delete, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from runs.models import Run
from schedules.firing import fire_due_schedules
from schedules.models import Cron
from schedules.services import create_cron
from tenants.models import AuditLog, Tenant
from tests.schedules.conftest import at

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def fired(tenant: Tenant, chain: Any) -> Cron:
    cron = create_cron(tenant, graph="chain", schedule="*/5 * * * *", now=at("2026-06-01 10:02"))
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=0)
    fire_due_schedules(now=at("2026-06-01 10:10:00"))
    cron.refresh_from_db()
    return cron


def test_changelist_shows_last_and_next_fire_and_the_fires_runs(
    staff_client: Client, fired: Cron
) -> None:
    response = staff_client.get(reverse("admin:schedules_cron_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    run = Run.objects.get()
    assert str(fired.public_id)[:8] in html and "*/5 * * * *" in html and "UTC" in html
    assert reverse("admin:runs_run_change", args=[run.pk]) in html
    assert "limit_exceeded.max_queued_runs" in html  # the refused fire, in last fire
    assert "2026-06-01 10:15" in html  # next fire


def test_change_page_is_read_only_with_fires_inline(staff_client: Client, fired: Cron) -> None:
    url = reverse("admin:schedules_cron_change", args=[fired.pk])
    html = staff_client.get(url).content.decode()
    assert "refused" in html and "started" in html
    assert str(Run.objects.get().public_id)[:8] in html
    staff_client.post(url, {"schedule": "* * * * *"})
    fired.refresh_from_db()
    assert fired.schedule == "*/5 * * * *"


def test_disable_and_enable_actions_are_audited(staff_client: Client, fired: Cron) -> None:
    url = reverse("admin:schedules_cron_changelist")
    staff_client.post(url, {"action": "disable_schedules", "_selected_action": [fired.pk]})
    fired.refresh_from_db()
    assert fired.enabled is False and fired.next_run_at is None
    staff_client.post(url, {"action": "enable_schedules", "_selected_action": [fired.pk]})
    fired.refresh_from_db()
    assert fired.enabled is True and fired.next_run_at is not None
    actions = list(AuditLog.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["cron.disable", "cron.enable"]


def test_delete_is_audited(staff_client: Client, fired: Cron) -> None:
    url = reverse("admin:schedules_cron_delete", args=[fired.pk])
    assert staff_client.post(url, {"post": "yes"}).status_code == 302
    assert not Cron.objects.exists()
    assert AuditLog.objects.filter(action="cron.delete").exists()
    assert Run.objects.count() == 1  # the runs it started stay


def test_non_staff_cannot_open_it(member: Any, fired: Cron) -> None:
    client = Client()
    client.force_login(member)
    response = client.get(reverse("admin:schedules_cron_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
