"""Per-graph concurrency: each graph's slots within its tenant, race-free like the tenant's.

A run holding a concurrency slot holds one of its tenant's and one of its graph's; the
dispatcher takes both in one transaction (runs/dispatch.py `_take_slot`) and the run's
`holds_slot` flag gives both back exactly once. Every slot is a guarded UPDATE on the graph's
own row: two dispatchers can never both take a graph's last slot.
"""

from __future__ import annotations

from django.db import connection

from tenants.models import GraphLimit


def graph_limit_for(tenant_id: int, graph_name: str, *, cap: int | None) -> GraphLimit:
    """The graph's slots row, made on its first version; `cap` is the newest version's
    `limits.max_concurrent_runs` (None: no per-graph cap)."""
    row, created = GraphLimit.objects.get_or_create(
        tenant_id=tenant_id, graph_name=graph_name, defaults={"max_concurrent_runs": cap}
    )
    if not created and row.max_concurrent_runs != cap:
        GraphLimit.objects.filter(pk=row.pk).update(max_concurrent_runs=cap)
        row.max_concurrent_runs = cap
    return row


def _table() -> str:
    return connection.ops.quote_name(GraphLimit._meta.db_table)


def acquire_graph_slot(limit_id: int) -> bool:
    """Take one of the graph's slots; False when its cap is reached. Counted even with no cap,
    so a cap a later version sets sees the runs already in flight."""
    q = connection.ops.quote_name
    count, cap = q("running_count"), q("max_concurrent_runs")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET {count} = {count} + 1 "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND ({cap} IS NULL OR {count} < {cap})",
            [limit_id],
        )
        return cursor.rowcount == 1


def release_graph_slot(limit_id: int) -> None:
    q = connection.ops.quote_name
    count = q("running_count")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET {count} = {count} - 1 "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND {count} > 0",
            [limit_id],
        )
