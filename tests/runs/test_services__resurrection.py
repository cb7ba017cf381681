"""Resurrection: on by default (3, capped by the tenant), after a cooldown the dispatcher
respects, never for fatal errors (by flag, by code, by message), and announced with attempt, max
and the node it resumes from."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.utils import timezone

from runs.dispatch import dispatch_once
from runs.engine import NodeError, register_function
from runs.models import Event, Run, Step
from runs.services import cancel_run, create_graph_version, create_run
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import InlineQueue

pytestmark = pytest.mark.django_db(transaction=True)

# What each test's function raises, call by call; an exhausted list means success.
RAISES: list[BaseException] = []


@register_function("resurrection_probe", replace=True)
def probe(state: dict, ctx: object) -> dict:
    if RAISES:
        raise RAISES.pop(0)
    return {"ok": True}


@pytest.fixture(autouse=True)
def no_cooldown(settings: Any) -> None:
    RAISES.clear()
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 0}


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "probe",
        "start": "prepare",
        "nodes": {
            "prepare": {"kind": "transform", "set": {"ready": "true"}},
            "call": {"kind": "function", "function": "resurrection_probe"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "prepare", "to": "call"}, {"from": "call", "to": "done"}],
        **extra,
    }


def start(tenant: Tenant, queue: InlineQueue, **extra: Any) -> Run:
    create_graph_version(tenant, spec(**extra))
    run = create_run(tenant, graph="probe")
    queue.drain()
    run.refresh_from_db()
    return run


def events(run: Run, kind: str) -> list[dict[str, Any]]:
    return list(
        Event.objects.filter(run=run, type=kind).order_by("seq").values_list("data", flat=True)
    )


def test_a_spec_that_says_nothing_is_resurrected_up_to_three_times(
    tenant: Tenant, queue: InlineQueue
) -> None:
    RAISES.extend(RuntimeError("the service fell over") for _ in range(3))
    run = start(tenant, queue)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.resurrections == 3
    resurrected = events(run, "run.resurrected")
    assert [(e["attempt"], e["max"], e["node"]) for e in resurrected] == [
        (1, 3, "call"),
        (2, 3, "call"),
        (3, 3, "call"),
    ]
    assert resurrected[0]["error"]["code"] == "node_failed"
    # Each resurrection re-ran only the failed node, with the state from before it.
    nodes = list(Step.objects.filter(run=run).values_list("node", "status"))
    assert nodes == [("prepare", "completed")] + [("call", "failed")] * 3 + [
        ("call", "completed"),
        ("done", "completed"),
    ]


def test_past_max_resurrections_the_run_fails_saying_it_tried(
    tenant: Tenant, queue: InlineQueue
) -> None:
    RAISES.extend(RuntimeError("the service fell over") for _ in range(4))
    run = start(tenant, queue)
    assert run.status == RunStatus.FAILED
    assert run.resurrections == 3
    assert run.error["code"] == "node_failed" and "'call'" in run.error["message"]
    assert run.error["resurrections"] == {"attempts": 3, "max": 3}
    assert len(events(run, "run.resurrected")) == 3
    assert Step.objects.filter(run=run, node="call", status="failed").count() == 4


def test_the_spec_asks_within_the_tenants_cap(tenant: Tenant, queue: InlineQueue) -> None:
    RAISES.extend(RuntimeError("down") for _ in range(5))
    run = start(tenant, queue, max_resurrections=1)
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 1)
    assert events(run, "run.resurrected")[0]["max"] == 1

    Tenant.objects.filter(pk=tenant.pk).update(max_resurrections=2)
    tenant.refresh_from_db()
    RAISES[:] = [RuntimeError("down") for _ in range(5)]
    run = start(tenant, queue, max_resurrections=10)  # more than the tenant allows
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 2)
    assert [e["max"] for e in events(run, "run.resurrected")] == [2, 2]


def test_a_tenant_set_to_zero_never_resurrects(tenant: Tenant, queue: InlineQueue) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_resurrections=0)
    tenant.refresh_from_db()
    RAISES.append(RuntimeError("down"))
    run = start(tenant, queue)
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 0)
    assert "resurrections" not in run.error


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError("permission denied: /srv/data"),
        RuntimeError("Error code: 401 - Invalid API key provided"),
        RuntimeError("You exceeded your current quota (insufficient_quota)"),
        RuntimeError("HTTP 403 Forbidden"),
    ],
    ids=["permission", "credentials", "quota", "forbidden"],
)
def test_a_plain_error_about_credentials_permission_or_quota_is_fatal(
    tenant: Tenant, queue: InlineQueue, exc: BaseException
) -> None:
    RAISES.append(exc)
    run = start(tenant, queue)
    assert run.status == RunStatus.FAILED
    assert run.resurrections == 0
    assert run.error["fatal"] is True
    assert run.error["fatal_reason"].startswith("message matches")
    assert events(run, "run.resurrected") == []


def test_an_error_code_listed_as_fatal_is_not_resurrected(
    tenant: Tenant, queue: InlineQueue
) -> None:
    # Not flagged fatal by whoever raised it: the code alone decides.
    RAISES.append(NodeError("quota_exceeded", "the plan ran out", fatal=False))
    run = start(tenant, queue)
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 0)
    assert run.error["cause"]["code"] == "quota_exceeded"
    assert "quota_exceeded" in run.error["fatal_reason"]


def test_the_engines_fatal_flag_is_never_resurrected(tenant: Tenant, queue: InlineQueue) -> None:
    RAISES.append(NodeError("bad_config", "the node is misconfigured", fatal=True))
    run = start(tenant, queue)
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 0)
    assert run.error["fatal"] is True


def test_fatal_patterns_and_codes_are_settings(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {
        **settings.RUNYARD,
        "FATAL_ERROR_PATTERNS": ["flux capacitor"],
        "FATAL_ERROR_CODES": ["custom_*"],
    }
    RAISES.append(RuntimeError("The Flux Capacitor is broken"))
    run = start(tenant, queue)
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 0)
    assert run.error["fatal_reason"] == "message matches 'flux capacitor'"

    RAISES[:] = [NodeError("custom_refusal", "no")]
    run = create_run(tenant, graph="probe")
    queue.drain()
    run.refresh_from_db()
    assert (run.status, run.resurrections) == (RunStatus.FAILED, 0)

    # "permission denied" is no longer in the (replaced) list: resurrected this time.
    RAISES[:] = [PermissionError("permission denied")]
    run = create_run(tenant, graph="probe")
    queue.drain()
    run.refresh_from_db()
    assert (run.status, run.resurrections) == (RunStatus.SUCCEEDED, 1)


def test_a_resurrected_run_waits_its_cooldown_queued_and_then_resumes(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 0.6}
    RAISES.append(RuntimeError("the service fell over"))
    create_graph_version(tenant, spec())
    run = create_run(tenant, graph="probe")
    before = timezone.now()
    assert queue.drain() == ["resurrected"]
    run.refresh_from_db()
    # Queued, not dispatched, no worker holding it: the cooldown costs no worker.
    assert run.status == RunStatus.QUEUED and run.dispatched_at is None
    assert not run.holds_slot and run.lease_owner == ""
    assert run.not_before is not None
    assert run.not_before - before >= dt.timedelta(seconds=0.6)
    (resurrected,) = events(run, "run.resurrected")
    assert resurrected["cooldown_seconds"] == 0.6
    assert resurrected["not_before"] == run.not_before.isoformat()
    # The dispatcher skips it while it cools down.
    assert dispatch_once() == 0
    assert queue.pending == []
    time.sleep(max(0.0, (run.not_before - timezone.now()).total_seconds()) + 0.05)
    assert dispatch_once() == 1
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.resurrections == 1
    restarted = Event.objects.filter(run=run, type="run.started").order_by("-seq").first()
    assert restarted is not None
    assert restarted.created_at >= dt.datetime.fromisoformat(resurrected["not_before"])


def test_other_tenants_runs_are_dispatched_while_one_cools_down(
    tenant: Tenant, other_tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 30}
    RAISES.append(RuntimeError("down"))
    cooling = start(tenant, queue)
    assert cooling.status == RunStatus.QUEUED and cooling.not_before is not None
    create_graph_version(other_tenant, spec())
    other = create_run(other_tenant, graph="probe")
    assert queue.drain() == ["succeeded"]
    other.refresh_from_db()
    assert other.status == RunStatus.SUCCEEDED
    cooling.refresh_from_db()
    assert cooling.status == RunStatus.QUEUED and cooling.dispatched_at is None


def test_a_run_cooling_down_cancels_at_once(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 30}
    RAISES.append(RuntimeError("down"))
    run = start(tenant, queue)
    assert run.status == RunStatus.QUEUED
    cancel_run(run, by="test")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    tenant.refresh_from_db()
    assert (tenant.running_count, tenant.queued_count) == (0, 0)


def test_a_child_run_waits_its_cooldown_inside_its_parents_step(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    # Children are never dispatched: the parent's worker drives them, so it waits the
    # cooldown itself (cancellably, its heartbeat running) before taking the child on again.
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 0.5}
    RAISES.append(RuntimeError("the service fell over"))
    create_graph_version(tenant, spec())
    create_graph_version(
        tenant,
        {
            "name": "outer",
            "start": "call",
            "max_resurrections": 0,
            "nodes": {
                "call": {"kind": "subgraph", "graph": "probe", "output": "child"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "call", "to": "done"}],
        },
    )
    run = create_run(tenant, graph="outer")
    assert queue.drain() == ["succeeded"]
    assert queue.delivered == [run.pk]  # the child never went to the broker
    child = Run.objects.get(parent=run)
    assert child.status == RunStatus.SUCCEEDED and child.resurrections == 1
    (resurrected,) = events(child, "run.resurrected")
    assert (resurrected["attempt"], resurrected["node"]) == (1, "call")
    restarted = Event.objects.filter(run=child, type="run.started").order_by("-seq").first()
    assert restarted is not None
    assert restarted.created_at >= dt.datetime.fromisoformat(resurrected["not_before"])
