"""Receiving an event: start every subscribed graph's latest version through the tenant gate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from runs.engine import ExpressionError, evaluate
from runs.services.create import create_run
from runs.services.errors import ServiceError
from tenants.limits import LimitExceeded
from tenants.models import Tenant
from triggers.models import ReceivedEvent, Subscription

# Graphs one event may start; the rest are refused (`too_many_subscribers`), so one request
# costs a bounded amount of work whatever a tenant subscribes.
MAX_RUNS_PER_EVENT = 50


@dataclass
class Received:
    event: ReceivedEvent
    duplicate: bool
    started: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


def receive_event(
    tenant: Tenant, *, name: str, payload: Any, event_id: str = "", by: str = ""
) -> Received:
    """Record event `name` and start a run of the latest version of every graph of `tenant`
    subscribed to it, each through `create_run` (limits, hooks, budgets); a refusal is
    recorded, not raised. A repeated `event_id` starts nothing and returns what the first
    delivery started (`duplicate`).

    One transaction: the received row is inserted first, so a concurrent delivery of the same
    id waits on its unique key and then finds it (PostgreSQL), or runs after it (SQLite)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                received = ReceivedEvent.objects.create(
                    tenant=tenant, event_id=event_id, name=name, payload=payload, by=by
                )
        except IntegrityError:
            first = ReceivedEvent.objects.get(tenant=tenant, event_id=event_id)
            return Received(first, True, list(first.started), list(first.refused))
        result = Received(received, False)
        subscriptions = list(
            Subscription.objects.filter(tenant=tenant, event=name).order_by("graph_name")
        )
        for i, sub in enumerate(subscriptions):
            if i >= MAX_RUNS_PER_EVENT:
                result.refused.append(
                    _refusal(
                        sub,
                        "too_many_subscribers",
                        f"One event starts at most {MAX_RUNS_PER_EVENT} graphs.",
                    )
                )
                continue
            _start(tenant, sub, received, result)
        received.started, received.refused = result.started, result.refused
        ReceivedEvent.objects.filter(pk=received.pk).update(
            started=result.started, refused=result.refused
        )
    return result


def _refusal(sub: Subscription, code: str, message: str) -> dict[str, Any]:
    return {"graph": sub.graph_name, "code": code, "message": message}


def run_input(sub: Subscription, name: str, event_id: str, payload: Any) -> dict[str, Any]:
    """The run's input: the payload itself, or the subscription's `input` expressions over it
    (the engine's bounded evaluator; `payload` and `event` are in scope)."""
    if sub.input is None:
        if not isinstance(payload, dict):
            raise ValueError(
                "the payload is the run's input, so it must be a JSON object; give the "
                "trigger an `input` mapping to build one from it"
            )
        return payload
    scope = {"payload": payload, "event": {"name": name, "id": event_id}}
    return {key: evaluate(source, scope, key=f"input.{key}") for key, source in sub.input.items()}


def _start(tenant: Tenant, sub: Subscription, received: ReceivedEvent, result: Received) -> None:
    try:
        data = run_input(sub, received.name, received.event_id, received.payload)
    except ExpressionError as exc:
        result.refused.append(_refusal(sub, "trigger_input_failed", exc.message))
        return
    except ValueError as exc:
        result.refused.append(_refusal(sub, "invalid_input", str(exc)))
        return
    try:
        run = create_run(
            tenant,
            graph=sub.graph_name,
            input=data,
            metadata={"event": received.name, "event_id": str(received.public_id)},
            by=received.by,
            created_by=f"trigger:{received.name}",
        )
    except (ServiceError, LimitExceeded) as exc:
        result.refused.append(_refusal(sub, exc.code, exc.message))
        return
    result.started.append(
        {"run_id": str(run.public_id), "graph": sub.graph_name, "version": run.graph.version}
    )


PRUNE_BATCH = 1000


def prune_received_events(*, received_before: dt.datetime) -> int:
    """Delete events received before the cutoff, in short batches; their ids no longer
    deduplicate a redelivery (the window a sender may repeat an id in is the retention)."""
    deleted = 0
    while True:
        ids = list(
            ReceivedEvent.objects.filter(received_at__lt=received_before).values_list(
                "id", flat=True
            )[:PRUNE_BATCH]
        )
        if not ids:
            return deleted
        deleted += ReceivedEvent.objects.filter(id__in=ids).delete()[0]
