"""The outbox: deliveries written in the transaction that changes a run's status.

`enqueue_for_run` is the one thing runs/ calls (runs/services/lifecycle.py `transition`), and
only when a run becomes succeeded, failed, cancelled, waiting, interrupted or timed_out: never
on the step path. A run of a tenant that never asked for a webhook returns before any query
(`Tenant.webhooks_in_use`, read from the run's already loaded tenant); otherwise it costs two
indexed queries (the tenant's enabled subscriptions, the run's own webhook) and, when there is
a target, one read of the run and one insert per target.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tenants.models import Tenant
from webhooks.models import EVENTS, Delivery, RunWebhook, Subscription

RUN_FIELDS = (
    "public_id",
    "status",
    "graph__name",
    "graph__version",
    "thread__public_id",
    "error",
    "steps",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "waiting_for",
    "metadata",
    "created_at",
    "started_at",
    "finished_at",
)


def _in_use(run: Any) -> bool:
    """Whether the run's tenant ever asked for a webhook. The flag only ever turns on, so the
    tenant copy loaded with the run (claim, cancel and the reconciler all load it) answers
    without a query. The one gap: a segment that loaded its tenant before the tenant's very
    first webhook was created (at most one segment, RUNYARD SEGMENT_SECONDS) misses it."""
    from runs.models import Run

    if Run.tenant.is_cached(run):
        return bool(run.tenant.webhooks_in_use)
    flag = Tenant.objects.filter(pk=run.tenant_id).values_list("webhooks_in_use", flat=True)
    return bool(flag.first())


def enqueue_for_run(run: Any, event: str, events: list[tuple[str, Any]]) -> int:
    """Write the deliveries `event` owes for `run`; must run in the status change's transaction.

    `events` are the run events the change writes: a change that does not announce `event`
    itself (a paused run resumed back into `waiting`) owes nothing. Child runs (subgraphs) are
    announced through their root run only. Returns how many deliveries were written.
    """
    if event not in EVENTS or run.parent_id is not None:
        return 0
    if not any(name == event for name, _ in events):
        return 0
    if not _in_use(run):
        return 0
    subs = [
        s
        for s in Subscription.objects.filter(tenant_id=run.tenant_id, enabled=True).only(
            "pk", "url", "events", "include_state"
        )
        if event in (s.events or [])
    ]
    own = RunWebhook.objects.filter(run_id=run.pk).first()
    if not subs and own is None:
        return 0
    now = timezone.now()
    row = _run_row(run.pk)
    bodies: dict[bool, str] = {}

    def body(include_state: bool) -> str:
        if include_state not in bodies:
            bodies[include_state] = _body(event, row, now, include_state=include_state)
        return bodies[include_state]

    from webhooks.services import retry_window

    until = now + retry_window()
    rows = [
        Delivery(
            tenant_id=run.tenant_id,
            subscription_id=s.pk,
            run_public_id=row["public_id"],
            event=event,
            url=s.url,
            body=body(s.include_state),
            next_attempt_at=now,
            retry_until=until,
        )
        for s in subs
    ]
    if own is not None:
        rows.append(
            Delivery(
                tenant_id=run.tenant_id,
                run_public_id=row["public_id"],
                event=event,
                url=own.url,
                body=body(own.include_state),
                next_attempt_at=now,
                retry_until=until,
            )
        )
    created = Delivery.objects.bulk_create(rows)
    pks = [d.pk for d in created if d.pk is not None]
    from webhooks.delivery import send_soon

    # The first attempt is quick: a worker sends it as soon as the change commits. Without
    # primary keys from bulk_create (old SQLite), the scheduler's tick sends them.
    if pks:
        transaction.on_commit(partial(send_soon, pks))
    return len(rows)


def _run_row(run_pk: int) -> dict[str, Any]:
    """The run as this transaction is about to commit it (in-memory copies may hold
    unevaluated F() expressions, or lag behind the row)."""
    from runs.checkpoints import current_state
    from runs.models import Run

    row = Run.objects.filter(pk=run_pk).values(*RUN_FIELDS, "state", "state_behind").get()
    if row.pop("state_behind"):  # its steps wrote checkpoints, not the state (another worker's)
        row["state"] = current_state(Run(pk=run_pk, state=row["state"], state_behind=True))
    return row


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class WebhookRun(TypedDict, total=False):
    id: str
    status: str
    graph: dict[str, Any]
    thread_id: str | None
    error: dict[str, Any] | None
    usage: dict[str, Any]
    waiting_for: dict[str, Any] | None
    metadata: dict[str, Any]
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    state: dict[str, Any] | None  # absent when the target turned it off
    state_omitted: str  # present when the state was too large to send


class WebhookBody(TypedDict):
    """What every delivery's body holds (README, Webhooks)."""

    event: str
    timestamp: str | None
    run: WebhookRun


def _body(event: str, row: dict[str, Any], now: Any, *, include_state: bool) -> str:
    run: WebhookRun = {
        "id": str(row["public_id"]),
        "status": row["status"],
        "graph": {"name": row["graph__name"], "version": row["graph__version"]},
        "thread_id": str(row["thread__public_id"]) if row["thread__public_id"] else None,
        "error": row["error"],
        "usage": {
            "steps": row["steps"],
            "tokens_in": row["tokens_in"],
            "tokens_out": row["tokens_out"],
            "cost_usd": float(row["cost_usd"]),
        },
        "waiting_for": row["waiting_for"],
        "metadata": row["metadata"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
    }
    if include_state:
        state = json.dumps(row["state"], separators=(",", ":"), ensure_ascii=False)
        limit = int(settings.RUNYARD["WEBHOOK_MAX_STATE_BYTES"])
        if len(state.encode()) <= limit:
            run["state"] = row["state"]
        else:  # the run's own API has it; a webhook body stays small
            run["state"] = None
            run["state_omitted"] = f"larger than {limit} bytes"
    payload: WebhookBody = {"event": event, "timestamp": _iso(now), "run": run}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
