"""The reconciler leaves a child run to its parent while the parent can still resume it, and
ends the child once the parent has ended; the dispatcher never dispatches a child."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from runs import dispatch
from runs.models import Run
from runs.reconcile import reconcile_once
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tenants.models import Tenant
from tests.runs.conftest import chain_spec

pytestmark = pytest.mark.django_db(transaction=True)

PAST = timezone.now() - dt.timedelta(hours=1)


def _family(tenant: Tenant, queue: Any, *, parent_status: str, child_status: str) -> tuple:
    """A parent and its child as a crash left them, both with expired leases."""
    create_graph_version(tenant, chain_spec())
    parent = create_run(tenant, graph="chain")
    queue.pending.clear()
    child = Run.objects.create(
        tenant=tenant,
        graph=parent.graph,
        graph_hash=parent.graph_hash,
        parent=parent,
        root=parent,
        depth=1,
        child_key="1:call#1:r0:call@0#1",
        status=child_status,
        dispatched_at=PAST,
        lease_owner="dead-worker",
        lease_expires_at=PAST,
    )
    Run.objects.filter(pk=parent.pk).update(
        status=parent_status, lease_owner="dead-worker", lease_expires_at=PAST, dispatched_at=PAST
    )
    return parent, child


@pytest.mark.parametrize("child_status", [RunStatus.RUNNING, RunStatus.QUEUED])
def test_a_child_of_a_live_parent_is_left_to_the_parent(tenant, queue, child_status) -> None:
    parent, child = _family(
        tenant, queue, parent_status=RunStatus.RUNNING, child_status=child_status
    )
    findings = reconcile_once()
    assert [(f.run_id, f.action) for f in findings] == [(str(parent.public_id), "resume")]
    child.refresh_from_db()
    assert child.status == child_status and child.recoveries == 0


def test_a_child_whose_parent_ended_is_cancelled(tenant, queue) -> None:
    parent, child = _family(
        tenant, queue, parent_status=RunStatus.FAILED, child_status=RunStatus.RUNNING
    )
    findings = reconcile_once()
    assert [(f.run_id, f.problem, f.action) for f in findings] == [
        (str(child.public_id), "parent_ended", "cancel")
    ]
    assert findings[0].evidence["parent_status"] == RunStatus.FAILED
    child.refresh_from_db()
    assert child.status == RunStatus.CANCELLED and child.epoch == 1
    assert reconcile_once() == []


def test_the_dispatcher_never_dispatches_a_child(tenant, queue) -> None:
    parent, child = _family(
        tenant, queue, parent_status=RunStatus.RUNNING, child_status=RunStatus.QUEUED
    )
    Run.objects.filter(pk=child.pk).update(dispatched_at=None)
    assert dispatch.dispatch_once() == 0
    child.refresh_from_db()
    assert child.dispatched_at is None and not child.holds_slot
    assert queue.pending == []
