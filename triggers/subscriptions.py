"""Keeping subscriptions in step with graph versions (called by runs/services/graphs.py when
a version is stored; imports no runs module, so the dependency points one way)."""

from __future__ import annotations

from typing import Any

from triggers.models import Subscription


def subscribe_version(graph: Any, triggers: list[dict[str, Any]]) -> None:
    """The newest version's triggers replace the graph's subscriptions (in the caller's
    transaction, with the version it stores)."""
    Subscription.objects.filter(tenant_id=graph.tenant_id, graph_name=graph.name).delete()
    Subscription.objects.bulk_create(
        Subscription(
            tenant_id=graph.tenant_id, graph_name=graph.name, event=t["event"], input=t["input"]
        )
        for t in triggers
    )
