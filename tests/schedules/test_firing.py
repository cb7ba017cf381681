"""fire_due_schedules: a due tick fires once, missed ticks fire once, refusals are recorded on
the schedule (not retried), disabled schedules do not fire, runs carry metadata.cron_id."""

from __future__ import annotations

from typing import Any

import pytest

from runs.models import Run
from runs.services import create_graph_version, create_thread
from runs.status import RunStatus
from schedules.firing import fire_due_schedules
from schedules.models import Cron, CronFire, FireOutcome
from schedules.services import create_cron, set_cron_enabled, update_cron
from tenants.models import AuditLog, Tenant
from tests.runs.conftest import InlineQueue, approval_spec
from tests.schedules.conftest import at, typed_spec

pytestmark = pytest.mark.django_db

T0 = at("2026-06-01 10:02:00")


def every_five(tenant: Tenant, **options: Any) -> Cron:
    return create_cron(tenant, graph="chain", schedule="*/5 * * * *", now=T0, **options)


@pytest.mark.django_db(transaction=True)
def test_a_due_tick_fires_once(tenant: Tenant, chain: Any, queue: InlineQueue) -> None:
    cron = every_five(tenant, input={"count": 4}, metadata={"team": "ops"})
    assert cron.next_run_at == at("2026-06-01 10:05:00")
    assert fire_due_schedules(now=at("2026-06-01 10:04:59")) == []  # not due yet

    fired = fire_due_schedules(now=at("2026-06-01 10:05:01"))
    assert [f.outcome for f in fired] == [FireOutcome.STARTED]
    assert fire_due_schedules(now=at("2026-06-01 10:05:02")) == []  # the same tick: once

    run = Run.objects.get()
    assert run.metadata == {"team": "ops", "cron_id": str(cron.public_id)}
    assert run.input == {"count": 4} and run.status == RunStatus.QUEUED
    cron.refresh_from_db()
    assert cron.next_run_at == at("2026-06-01 10:10:00")
    assert cron.last_run == run and cron.last_outcome == "started" and cron.last_error is None
    assert cron.fire_count == 1 and cron.last_fired_at == at("2026-06-01 10:05:01")
    fire = CronFire.objects.get()
    assert (fire.tick, fire.run, fire.outcome) == (at("2026-06-01 10:05:00"), run, "started")

    queue.drain()  # the run was dispatched when its fire committed
    assert Run.objects.get().status == RunStatus.SUCCEEDED


def test_missed_ticks_fire_once_and_resume_at_the_next_future_tick(
    tenant: Tenant, chain: Any, queue: InlineQueue
) -> None:
    cron = every_five(tenant)
    # Down from 10:03 to 13:31: 41 ticks missed.
    fired = fire_due_schedules(now=at("2026-06-01 13:31:00"))
    assert len(fired) == 1 and Run.objects.count() == 1
    cron.refresh_from_db()
    assert cron.next_run_at == at("2026-06-01 13:35:00")
    assert CronFire.objects.get().tick == at("2026-06-01 10:05:00")
    assert fire_due_schedules(now=at("2026-06-01 13:31:01")) == []
    assert len(fire_due_schedules(now=at("2026-06-01 13:35:00"))) == 1
    assert Run.objects.count() == 2


def test_disabled_schedule_does_not_fire(tenant: Tenant, chain: Any) -> None:
    cron = every_five(tenant, enabled=False)
    assert cron.next_run_at is None
    other = every_five(tenant)
    set_cron_enabled(other, False)
    assert fire_due_schedules(now=at("2026-06-02 00:00:00")) == []
    assert not Run.objects.exists() and not CronFire.objects.exists()


def test_a_deactivated_tenants_schedule_does_not_fire(tenant: Tenant, chain: Any) -> None:
    every_five(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    assert fire_due_schedules(now=at("2026-06-02 00:00:00")) == []


def test_a_refused_fire_is_recorded_and_not_retried(tenant: Tenant, chain: Any) -> None:
    cron = every_five(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=0)

    fired = fire_due_schedules(now=at("2026-06-01 10:05:00"))
    assert [f.outcome for f in fired] == ["refused"]
    assert fire_due_schedules(now=at("2026-06-01 10:06:00")) == []  # no retry loop
    assert not Run.objects.exists()
    cron.refresh_from_db()
    assert cron.last_outcome == "refused" and cron.last_run is None
    assert cron.last_error["code"] == "limit_exceeded.max_queued_runs"
    assert "max_queued_runs" in cron.last_error["message"]
    assert cron.next_run_at == at("2026-06-01 10:10:00")
    fire = CronFire.objects.get()
    assert fire.outcome == "refused" and fire.error == cron.last_error

    # The next tick, with room again, starts a run and clears the error.
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=100)
    fire_due_schedules(now=at("2026-06-01 10:10:00"))
    cron.refresh_from_db()
    assert cron.last_outcome == "started" and cron.last_error is None
    assert cron.last_run == Run.objects.get()


def test_a_fire_of_a_graph_version_that_is_gone_is_recorded(tenant: Tenant, chain: Any) -> None:
    cron = every_five(tenant, version=1)
    Cron.objects.filter(pk=cron.pk).update(graph_version=7)  # as if that version were gone
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    cron.refresh_from_db()
    assert cron.last_outcome == "refused" and cron.last_error["code"] == "not_found"


def test_a_budget_refusal_and_a_busy_thread_are_recorded(tenant: Tenant, chain: Any) -> None:
    create_graph_version(tenant, approval_spec())
    thread = create_thread(tenant)
    cron = create_cron(
        tenant,
        graph="approve",
        schedule="*/5 * * * *",
        thread_id=str(thread.public_id),
        now=T0,
    )
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    fire_due_schedules(now=at("2026-06-01 10:10:00"))  # the first run still holds the thread
    cron.refresh_from_db()
    assert Run.objects.filter(thread=thread).count() == 1
    assert cron.last_outcome == "refused" and cron.last_error["code"] == "thread_busy"
    outcomes = list(cron.fires.order_by("id").values_list("outcome", flat=True))
    assert outcomes == ["started", "refused"]


def test_a_hook_refusal_keeps_its_audit_row(tenant: Tenant, chain: Any, monkeypatch) -> None:
    from runs import hooks

    monkeypatch.setattr(hooks, "refusal_for", lambda tenant, request: "closed on Sundays")
    cron = every_five(tenant)
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    cron.refresh_from_db()
    assert cron.last_error == {"code": "blocked_by_hook", "message": "closed on Sundays"}
    assert AuditLog.objects.filter(action="run.blocked_by_hook").count() == 1


def test_an_unexpected_failure_is_recorded_and_the_tick_moves_on(
    tenant: Tenant, chain: Any, monkeypatch
) -> None:
    from schedules import firing

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(firing, "create_run", explode)
    cron = every_five(tenant)
    fired = fire_due_schedules(now=at("2026-06-01 10:05:00"))
    assert [f.outcome for f in fired] == ["failed"]
    cron.refresh_from_db()
    assert (
        cron.last_error["code"] == "internal_error" and "RuntimeError" in cron.last_error["message"]
    )
    assert cron.next_run_at == at("2026-06-01 10:10:00")


def test_input_checked_at_creation_is_checked_again_at_fire(tenant: Tenant) -> None:
    create_graph_version(tenant, typed_spec())
    cron = create_cron(tenant, graph="typed", schedule="@hourly", input={"text": "x"}, now=T0)
    create_graph_version(tenant, {**typed_spec(), "input_schema": {"required": ["other"]}})
    fire_due_schedules(now=at("2026-06-01 11:00:00"))  # follows the latest version: v2
    cron.refresh_from_db()
    assert cron.last_error["code"] == "invalid_input"


def test_history_keeps_the_last_fires(tenant: Tenant, chain: Any, settings: Any) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CRON_FIRES_KEPT": 3}
    cron = create_cron(tenant, graph="chain", schedule="* * * * *", now=T0)
    for minute in range(3, 9):
        fire_due_schedules(now=at(f"2026-06-01 10:0{minute}:00"))
    ticks = list(cron.fires.order_by("tick").values_list("tick", flat=True))
    assert ticks == [at(f"2026-06-01 10:0{m}:00") for m in (6, 7, 8)]
    cron.refresh_from_db()
    assert cron.fire_count == 6


def test_changing_the_schedule_moves_the_next_tick(tenant: Tenant, chain: Any) -> None:
    cron = every_five(tenant)
    cron = update_cron(cron, schedule="30 * * * *", now=at("2026-06-01 10:03:00"))
    assert cron.next_run_at == at("2026-06-01 10:30:00")
    assert fire_due_schedules(now=at("2026-06-01 10:05:00")) == []


def test_a_stale_view_of_the_schedule_does_not_fire(tenant: Tenant, chain: Any) -> None:
    from schedules.firing import fire_cron

    cron = every_five(tenant)
    # A scheduler that read the row before someone changed its expression claims nothing.
    Cron.objects.filter(pk=cron.pk).update(schedule="0 * * * *")
    assert fire_cron(cron.pk, cron.next_run_at, "*/5 * * * *", "UTC", now=T0) is None
    assert not Run.objects.exists()


def test_daylight_saving_keeps_local_time(tenant: Tenant, chain: Any) -> None:
    cron = create_cron(
        tenant,
        graph="chain",
        schedule="0 9 * * *",
        timezone="Europe/Paris",
        now=at("2026-03-28 12:00:00"),
    )
    assert cron.next_run_at == at("2026-03-29 07:00:00")  # 09:00 CEST, the day clocks change
    fire_due_schedules(now=at("2026-03-29 07:00:00"))
    cron.refresh_from_db()
    assert cron.next_run_at == at("2026-03-30 07:00:00")


def test_priority_is_stored(tenant: Tenant, chain: Any) -> None:
    assert every_five(tenant, priority=1).priority == 1
    cron = Cron.objects.get()
    assert cron.priority == 1


def test_fires_show_in_the_api(tenant: Tenant, chain: Any) -> None:
    from tests.runs.test_api__helpers import key_client

    cron = every_five(tenant)
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    body = key_client(tenant).get(f"/crons/{cron.public_id}").json()
    run = Run.objects.get()
    assert body["last_run_id"] == str(run.public_id) and body["last_outcome"] == "started"
    assert body["fires"][0]["run_id"] == str(run.public_id)
    assert body["fires"][0]["tick"] == "2026-06-01T10:05:00Z"
    runs = key_client(tenant).get("/runs", {"metadata.cron_id": str(cron.public_id)}).json()
    assert [r["id"] for r in runs["items"]] == [str(run.public_id)]
