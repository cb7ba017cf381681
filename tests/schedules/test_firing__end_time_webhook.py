"""A schedule's `end_time` (no tick after it fires; the schedule disables itself) and its
`webhook` (each run it starts gets it, checked against the tenant's allow-list now and at
every fire)."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Run
from runs.services.errors import ValidationFailed
from schedules.firing import fire_due_schedules
from schedules.models import Cron, FireOutcome
from schedules.services import create_cron, update_cron
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue
from tests.runs.test_api__helpers import Api
from tests.schedules.conftest import at
from tests.schedules.test_api__crons import patch
from webhooks.models import RunWebhook

pytestmark = pytest.mark.django_db

T0 = at("2026-06-01 10:02:00")


def test_no_tick_after_end_time_fires(tenant: Tenant, chain: Any, queue: InlineQueue) -> None:
    cron = create_cron(
        tenant, graph="chain", schedule="*/5 * * * *", end_time=at("2026-06-01 10:10:00"), now=T0
    )
    assert cron.next_run_at == at("2026-06-01 10:05:00")
    assert [f.outcome for f in fire_due_schedules(now=at("2026-06-01 10:05:01"))] == ["started"]
    cron.refresh_from_db()
    assert cron.next_run_at == at("2026-06-01 10:10:00") and cron.enabled  # the end tick fires

    assert [f.outcome for f in fire_due_schedules(now=at("2026-06-01 10:10:01"))] == ["started"]
    cron.refresh_from_db()
    assert cron.next_run_at is None and not cron.enabled  # 10:15 is past the end
    assert fire_due_schedules(now=at("2026-06-01 10:20:00")) == []
    assert Run.objects.count() == 2

    # An end before the first tick would never fire: refused, naming the field.
    with pytest.raises(ValidationFailed) as never:
        create_cron(
            tenant, graph="chain", schedule="0 9 * * *", end_time=at("2026-06-01 10:30:00"), now=T0
        )
    assert never.value.details["field"] == "end_time"
    assert never.value.code == "end_time_before_first_tick"
    # Moving the end later and enabling again: it fires on.
    update_cron(cron, end_time=at("2026-06-01 11:00:00"), enabled=True, now=at("2026-06-01 10:21"))
    cron.refresh_from_db()
    assert cron.next_run_at == at("2026-06-01 10:25:00") and cron.enabled
    update_cron(cron, end_time=None, now=at("2026-06-01 10:22"))
    assert Cron.objects.get(pk=cron.pk).end_time is None


def test_a_schedules_webhook_goes_to_each_run(
    tenant: Tenant, chain: Any, queue: InlineQueue
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        create_cron(
            tenant, graph="chain", schedule="*/5 * * * *", webhook="http://127.0.0.1/h", now=T0
        )
    assert refused.value.code == "webhook_refused" and "allow-list" in refused.value.message

    tenant.http_allowed_hosts = ["127.0.0.1"]
    tenant.http_allow_private = True
    tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
    cron = create_cron(
        tenant, graph="chain", schedule="*/5 * * * *", webhook="http://127.0.0.1/h", now=T0
    )
    fired = fire_due_schedules(now=at("2026-06-01 10:05:01"))
    assert [f.outcome for f in fired] == [FireOutcome.STARTED]
    assert RunWebhook.objects.get(run=fired[0].run).url == "http://127.0.0.1/h"

    # The allow-list changed since: the fire is refused and recorded, the tick consumed.
    tenant.http_allowed_hosts = []
    tenant.save(update_fields=["http_allowed_hosts"])
    fired = fire_due_schedules(now=at("2026-06-01 10:10:01"))
    assert [f.outcome for f in fired] == [FireOutcome.REFUSED]
    assert fired[0].error is not None and fired[0].error["code"] == "webhook_refused"
    update_cron(cron, webhook=None)
    assert Cron.objects.get(pk=cron.pk).webhook == ""


def test_end_time_and_webhook_over_the_api(alice: Api, tenant: Tenant) -> None:
    tenant.http_allowed_hosts = ["hooks.example.com"]
    tenant.save(update_fields=["http_allowed_hosts"])
    body = {"graph": "chain", "schedule": "*/5 * * * *"}
    naive = alice.post("/crons", {**body, "end_time": "2099-01-01T00:00:00"})
    assert naive.status_code == 422 and "offset" in naive.json()["error"]["message"]
    refused = alice.post("/crons", {**body, "webhook": "http://elsewhere.example.com/h"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "webhook_refused"

    made = alice.post("/crons", {**body, "end_time": "2099-01-01T00:00:00Z"})
    assert made.status_code == 201, made.json()
    assert made.json()["end_time"].startswith("2099-01-01T00:00:00")
    assert made.json()["webhook"] is None
    cron_id = made.json()["id"]
    cleared = patch(alice, cron_id, {"end_time": None})
    assert cleared.status_code == 200 and cleared.json()["end_time"] is None
