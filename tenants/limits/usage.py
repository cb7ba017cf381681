"""The usage ledger: per tenant, day and shard (and per model), written in the transaction of
the change that used it; read back as periods for budgets, the admin and the API."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import Field, Q, Sum
from django.utils import timezone

from tenants.models import UsageDay, UsageModelDay


def usage_shard(run_id: int) -> int:
    """The ledger shard a run's usage goes to (RUNYARD["USAGE_SHARDS"] rows per tenant-day).

    On PostgreSQL a step's ledger UPDATE holds the row until its transaction commits, so with
    one row per tenant and day every step of that tenant waited for the previous one's commit
    (bench/events.py: 100 concurrent runs of one tenant). Changing the count later is safe:
    readers sum whatever shards exist."""
    return run_id % max(1, int(settings.RUNYARD["USAGE_SHARDS"]))


LedgerRow = tuple[type[UsageDay | UsageModelDay], dict[str, Any], dict[str, int | Decimal]]


@functools.cache
def upsert_parts(
    model: type[UsageDay | UsageModelDay], keys: tuple[str, ...], amounts: tuple[str, ...]
) -> tuple[str, str]:
    """An upsert of `model`'s row of `keys` adding `amounts`, in two parts to put its values
    between: `INSERT INTO table (columns)` and `ON CONFLICT (keys) DO UPDATE SET ...`."""
    q = connection.ops.quote_name

    def col(name: str) -> str:
        return q(cast(str, cast(Field, model._meta.get_field(name)).column))

    table = q(model._meta.db_table)
    columns = ", ".join(col(n) for n in (*keys, *amounts))
    adds = ", ".join(f"{col(n)} = {table}.{col(n)} + excluded.{col(n)}" for n in amounts)
    return (
        f"INSERT INTO {table} ({columns})",  # noqa: S608 - names from model meta
        f"ON CONFLICT ({', '.join(col(k) for k in keys)}) DO UPDATE SET {adds}",
    )


@functools.cache
def _upsert_sql(
    model: type[UsageDay | UsageModelDay], keys: tuple[str, ...], amounts: tuple[str, ...]
) -> str:
    insert, conflict = upsert_parts(model, keys, amounts)
    values = ", ".join(["%s"] * (len(keys) + len(amounts)))
    return f"{insert} VALUES ({values}) {conflict}"


def _add_to_row(
    model: type[UsageDay | UsageModelDay], keys: dict[str, Any], amounts: dict[str, int | Decimal]
) -> None:
    """Add `amounts` to the ledger row of `keys`, creating it the first time: one upsert
    (SQLite >= 3.24 and PostgreSQL), so a step's transaction never reads its result (nor
    races another creating the row). It runs in every step's transaction; the ORM's query
    building cost more than the statement."""
    prep = {
        name: cast(Field, model._meta.get_field(name)).get_db_prep_save(value, connection)
        for name, value in (("day", keys["day"]), ("cost_usd", amounts["cost_usd"]))
    }
    with connection.cursor() as cursor:
        cursor.execute(
            _upsert_sql(model, tuple(keys), tuple(amounts)),
            [*{**keys, **amounts, **prep}.values()],
        )


def ledger_rows(
    tenant_id: int,
    *,
    runs: int = 0,
    steps: int = 0,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float | Decimal = 0,
    by_model: dict[str, dict[str, Any]] | None = None,
    day: dt.date | None = None,
    shard: int = 0,
) -> list[LedgerRow]:
    """The ledger rows `record_usage` adds to: (model, keys, amounts), the day's row first."""
    day = day or timezone.now().date()
    keys = {"tenant_id": tenant_id, "day": day, "shard": shard}
    amounts: dict[str, int | Decimal] = {
        "runs": runs,
        "steps": steps,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": Decimal(str(cost_usd)),
    }
    rows: list[LedgerRow] = [(UsageDay, keys, amounts)]
    for model, u in (by_model or {}).items():
        rows.append(
            (
                UsageModelDay,
                {**keys, "model": model},
                {
                    "calls": int(u.get("calls", 0)),
                    "tokens_in": int(u.get("tokens_in", 0)),
                    "tokens_out": int(u.get("tokens_out", 0)),
                    "cost_usd": Decimal(str(u.get("cost_usd", 0))),
                },
            )
        )
    return rows


def record_usage(tenant_id: int, **amounts: Any) -> None:
    """Add to today's ledger row of `shard` (and per model): `ledger_rows`' arguments. Call in
    the transaction of the change; a run's changes go to `usage_shard(run.pk)`."""
    for model, keys, added in ledger_rows(tenant_id, **amounts):
        _add_to_row(model, keys, added)


@dataclass
class Period:
    tokens: int
    cost_usd: Decimal
    runs: int
    steps: int


def usage_between(tenant_id: int, first: dt.date, last: dt.date) -> Period:
    agg = UsageDay.objects.filter(tenant_id=tenant_id, day__gte=first, day__lte=last).aggregate(
        tin=Sum("tokens_in"),
        tout=Sum("tokens_out"),
        cost=Sum("cost_usd"),
        runs=Sum("runs"),
        steps=Sum("steps"),
    )
    return Period(
        tokens=(agg["tin"] or 0) + (agg["tout"] or 0),
        cost_usd=agg["cost"] or Decimal(0),
        runs=agg["runs"] or 0,
        steps=agg["steps"] or 0,
    )


def day_and_month(tenant_id: int, today: dt.date) -> tuple[Period, Period]:
    """Today's and this month's usage in one query (budget checks run it at every step)."""
    is_today = Q(day=today)
    agg = UsageDay.objects.filter(
        tenant_id=tenant_id, day__gte=today.replace(day=1), day__lte=today
    ).aggregate(
        d_tin=Sum("tokens_in", filter=is_today),
        d_tout=Sum("tokens_out", filter=is_today),
        d_cost=Sum("cost_usd", filter=is_today),
        d_runs=Sum("runs", filter=is_today),
        d_steps=Sum("steps", filter=is_today),
        tin=Sum("tokens_in"),
        tout=Sum("tokens_out"),
        cost=Sum("cost_usd"),
        runs=Sum("runs"),
        steps=Sum("steps"),
    )

    def period(prefix: str) -> Period:
        return Period(
            tokens=(agg[f"{prefix}tin"] or 0) + (agg[f"{prefix}tout"] or 0),
            cost_usd=agg[f"{prefix}cost"] or Decimal(0),
            runs=agg[f"{prefix}runs"] or 0,
            steps=agg[f"{prefix}steps"] or 0,
        )

    return period("d_"), period("")


def usage_by_model(tenant_id: int, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Per-model usage between two days, most expensive first."""
    rows = (
        UsageModelDay.objects.filter(tenant_id=tenant_id, day__gte=first, day__lte=last)
        .values("model")
        .annotate(
            calls=Sum("calls"),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
            cost_usd=Sum("cost_usd"),
        )
        .order_by("-cost_usd", "model")
    )
    return [
        {
            "model": r["model"],
            "calls": r["calls"] or 0,
            "tokens_in": r["tokens_in"] or 0,
            "tokens_out": r["tokens_out"] or 0,
            "cost_usd": r["cost_usd"] or Decimal(0),
        }
        for r in rows
    ]
