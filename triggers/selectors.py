"""Reads for the dashboard: a tenant's triggers and the events it received lately."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tenants.models import Tenant
from triggers.models import ReceivedEvent, Subscription

RECENT_EVENTS = 20


def triggers_of(tenant: Tenant) -> list[dict[str, Any]]:
    """[{event, graphs: [{name, mapped}]}] by event name."""
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows = Subscription.objects.filter(tenant=tenant).order_by("event", "graph_name")
    for sub in rows.values("event", "graph_name", "input"):
        by_event[sub["event"]].append({"name": sub["graph_name"], "mapped": bool(sub["input"])})
    return [{"event": event, "graphs": graphs} for event, graphs in by_event.items()]


def recent_events(tenant: Tenant, *, limit: int = RECENT_EVENTS) -> list[ReceivedEvent]:
    """The newest received events (index received_event_recent), payload left out."""
    return list(
        ReceivedEvent.objects.filter(tenant=tenant).defer("payload").order_by("-id")[:limit]
    )
