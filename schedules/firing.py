"""Firing schedules: one pass of the scheduler's loop (`fire_due_schedules`), testable alone.

Exactly once per tick, however many schedulers run: a fire starts with a guarded UPDATE that
moves `next_run_at` from the due tick to the next future one, and only the scheduler whose
UPDATE changed the row goes on. The run is created in the same transaction, so the claim and
the run commit together (a crash in between fires nothing, and the next pass fires the tick).
On PostgreSQL a second scheduler's UPDATE waits for the first's row lock and then finds
`next_run_at` moved; on SQLite writers are serialised anyway.

After downtime the next tick is computed from now, not from the missed tick: a schedule that
missed many ticks fires once and goes on from the next future tick.

A refused fire (limits, budgets, a busy thread, a graph version gone, a pre_run hook) still
consumes its tick: it is recorded on the schedule and in its fire history, never retried.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.models import Run
from runs.services.create import create_run
from runs.services.dbretry import retry_transient
from runs.services.errors import ServiceError
from schedules.cronexpr import InvalidSchedule, next_tick
from schedules.models import Cron, CronFire, FireOutcome
from tenants.limits import LimitExceeded

log = logging.getLogger("schedules.firing")

# Schedules fired per pass at most; the rest wait for the next pass (the scheduler ticks often).
BATCH = 100


@dataclass
class Fired:
    cron_id: int
    tick: dt.datetime
    outcome: str
    run: Run | None
    error: dict[str, Any] | None


def fire_due_schedules(*, now: dt.datetime | None = None, limit: int = BATCH) -> list[Fired]:
    """Fire every enabled schedule whose tick is due (at most `limit`, oldest tick first).
    Returns what this caller fired; ticks another scheduler won are not in it."""
    now = now or timezone.now()
    due = list(
        Cron.objects.filter(enabled=True, next_run_at__lte=now, tenant__is_active=True)
        .order_by("next_run_at")
        .values_list("pk", "next_run_at", "schedule", "timezone", "end_time")[:limit]
    )
    fired: list[Fired] = []
    for pk, tick, expression, tz, end_time in due:
        assert tick is not None  # filtered on next_run_at__lte
        try:
            result = retry_transient(
                partial(fire_cron, pk, tick, expression, tz, now=now, end_time=end_time)
            )
        except Exception:  # noqa: BLE001 - one schedule's trouble must not stop the others
            log.exception("schedule %s: fire of tick %s failed", pk, tick)
            continue
        if result is not None:
            fired.append(result)
    return fired


def fire_cron(
    pk: int,
    tick: dt.datetime,
    expression: str,
    tz: str,
    *,
    now: dt.datetime,
    end_time: dt.datetime | None = None,
) -> Fired | None:
    """Claim tick `tick` of schedule `pk` (last seen with `expression` in `tz`) and start its
    run; None when the claim failed (another scheduler fired it, or the schedule changed).
    A schedule whose next tick would fall after its `end_time` is disabled by this fire."""
    broken: InvalidSchedule | None = None
    try:
        following: dt.datetime | None = next_tick(expression, tz, max(now, tick))
    except InvalidSchedule as exc:  # the zone database changed under it, or no date matches
        following, broken = None, exc
    if following is not None and end_time is not None and following > end_time:
        following = None
    with transaction.atomic():
        # The end as seen too: a schedule whose end changed meanwhile is fired by the next pass.
        same_end = {"end_time": end_time} if end_time is not None else {"end_time__isnull": True}
        claimed = Cron.objects.filter(
            pk=pk, enabled=True, next_run_at=tick, schedule=expression, timezone=tz, **same_end
        ).update(
            next_run_at=following,
            enabled=following is not None,
            last_fired_at=now,
            fire_count=F("fire_count") + 1,
        )
        if claimed != 1:
            return None
        cron = Cron.objects.select_related("tenant", "thread").get(pk=pk)
        if broken is not None:
            run, outcome = None, str(FireOutcome.FAILED)
            error: dict[str, Any] | None = {
                "code": "invalid_schedule",
                "message": f"{broken.message} The schedule was disabled.",
            }
        else:
            run, outcome, error = _start_run(cron, tick)
        Cron.objects.filter(pk=pk).update(
            last_run=run if run is not None else F("last_run"),
            last_outcome=outcome,
            last_error=error,
        )
        CronFire.objects.create(
            cron_id=pk, tick=tick, fired_at=now, run=run, outcome=outcome, error=error
        )
        _prune_fires(pk)
    if error is not None:
        log.info("schedule %s tick %s %s: %s", cron.public_id, tick, outcome, error["message"])
    return Fired(pk, tick, outcome, run, error)


def _start_run(cron: Cron, tick: dt.datetime) -> tuple[Run | None, str, dict[str, Any] | None]:
    """Start the schedule's run through the same service (and tenant gate) as `POST /runs`.
    A refusal keeps what the service recorded (a hook's audit row); anything unexpected is
    rolled back to the savepoint and recorded, so the claim still commits."""
    # Refused at fire time if the tenant's allow-list changed since.
    extra: dict[str, Any] = {"webhook": cron.webhook} if cron.webhook else {}
    savepoint = transaction.savepoint()
    try:
        run = create_run(
            cron.tenant,
            graph=cron.graph_name,
            version=cron.graph_version,
            input=cron.input,
            thread_id=str(cron.thread.public_id) if cron.thread is not None else None,
            multitask_strategy=cron.multitask_strategy,
            metadata={**cron.metadata, "cron_id": str(cron.public_id)},
            by=f"cron:{cron.public_id}",
            priority=cron.priority,
            **extra,
        )
    except (ServiceError, LimitExceeded) as exc:
        transaction.savepoint_commit(savepoint)
        return None, FireOutcome.REFUSED, {"code": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - recorded on the schedule, shown to its tenant
        transaction.savepoint_rollback(savepoint)
        log.exception("schedule %s: starting its run failed", cron.public_id)
        return (
            None,
            FireOutcome.FAILED,
            {
                "code": "internal_error",
                "message": f"Starting the run failed ({type(exc).__name__}).",
            },
        )
    transaction.savepoint_commit(savepoint)
    return run, FireOutcome.STARTED, None


def _prune_fires(cron_pk: int) -> None:
    keep = int(settings.RUNYARD["CRON_FIRES_KEPT"])
    older = list(
        CronFire.objects.filter(cron_id=cron_pk)
        .order_by("-id")
        .values_list("id", flat=True)[keep : keep + 1]
    )
    if older:
        CronFire.objects.filter(cron_id=cron_pk, id__lte=older[0]).delete()
