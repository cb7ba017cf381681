"""The dispatcher: moves queued runs to the django-q2 queue fairly across tenants.

Fair share: each free slot goes to the tenant with the fewest runs in flight, then to the one
served longest ago (round robin among equals), each tenant capped by `max_concurrent_runs` (a
guarded UPDATE in tenants/limits.py).
The whole cluster is capped too (`DISPATCH_CAPACITY`, default the worker count): runs wait
here, in the database, rather than in the broker's FIFO queue, where one tenant's backlog
would sit in front of everyone else's runs.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from runs.models import Run
from runs.status import ACTIVE, RunStatus
from tenants import limits
from tenants.models import Tenant

log = logging.getLogger(__name__)


def capacity() -> int:
    conf: dict[str, Any] = settings.RUNYARD
    return int(conf.get("DISPATCH_CAPACITY") or settings.Q_CLUSTER["workers"])


def in_flight() -> int:
    return Run.objects.filter(holds_slot=True).count()


def dispatchable() -> QuerySet[Run]:
    """Queued, not yet dispatched, and not behind an older active run of the same thread."""
    older_on_thread = Run.objects.filter(
        thread_id=OuterRef("thread_id"), status__in=ACTIVE, id__lt=OuterRef("id")
    )
    return Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True).filter(
        Q(thread__isnull=True) | ~Exists(older_on_thread)
    )


def dispatch_once(*, max_runs: int | None = None) -> int:
    """One dispatcher pass. Returns how many runs it handed to the queue.

    Each free slot goes to the tenant with the fewest runs in flight, ties to the one served
    longest ago: a tenant with nothing running is served before one with a backlog.
    """
    free = capacity() - in_flight()
    if max_runs is not None:
        free = min(free, max_runs)
    dispatched = 0
    exhausted: set[int] = set()
    while free > 0:
        tenant_id = next_tenant(exclude=exhausted)
        if tenant_id is None:
            break
        if _dispatch_one(tenant_id):
            dispatched += 1
            free -= 1
        else:
            exhausted.add(tenant_id)
    return dispatched


def next_tenant(*, exclude: set[int]) -> int | None:
    return (
        Tenant.objects.filter(
            Exists(dispatchable().filter(tenant_id=OuterRef("pk"))),
            running_count__lt=F("max_concurrent_runs"),
        )
        .exclude(pk__in=exclude)
        .order_by("running_count", F("last_dispatched_at").asc(nulls_first=True), "id")
        .values_list("id", flat=True)
        .first()
    )


def _dispatch_one(tenant_id: int) -> bool:
    with transaction.atomic():
        run = dispatchable().filter(tenant_id=tenant_id).order_by("id").first()
        if run is None:
            return False
        if not limits.acquire_run_slot(tenant_id):
            return False
        now = timezone.now()
        marked = Run.objects.filter(
            pk=run.pk, status=RunStatus.QUEUED, dispatched_at__isnull=True, holds_slot=False
        ).update(dispatched_at=now, holds_slot=True)
        if not marked:  # someone else dispatched or cancelled it meanwhile
            limits.release_run_slot(tenant_id)
            return False
        Tenant.objects.filter(pk=tenant_id).update(last_dispatched_at=now)
        transaction.on_commit(partial(enqueue_run, run.pk))
    return True


def enqueue_run(run_pk: int) -> None:
    async_task("runs.tasks.execute_run", run_pk, task_name=f"run-{run_pk}", group="runs", hook=None)


def dispatch_on_commit() -> None:
    """Dispatch as soon as the current transaction commits (or now, outside one)."""
    transaction.on_commit(_dispatch_safely)


def _dispatch_safely() -> None:
    try:
        dispatch_once()
    except Exception:  # noqa: BLE001 - the scheduler's next tick dispatches anyway
        log.warning("dispatch after commit failed", exc_info=True)
