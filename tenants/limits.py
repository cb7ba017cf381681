"""The single gate for every tenant limit. Race-free: guarded UPDATEs on the tenant's own row.

Admission counters (`queued_count`, `running_count`) change only through the functions here,
and only by conditional UPDATEs, so two workers can never both take the last slot. The runs app
pairs each acquire with a flag on the run that it clears with a guarded UPDATE before calling
the matching release, so every slot is given back exactly once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import F, Field, Q, Sum
from django.utils import timezone

from tenants.models import Tenant, UsageDay, UsageModelDay

RATE_WINDOW = dt.timedelta(seconds=60)


class LimitExceeded(Exception):
    """A limit refused an action. `limit` is the limit's name; `retry_after` in seconds."""

    def __init__(
        self,
        limit: str,
        message: str,
        *,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}

    @property
    def code(self) -> str:
        return f"limit_exceeded.{self.limit}"


# --- admission -------------------------------------------------------------------------------


def admit_run(tenant: Tenant, *, now: dt.datetime | None = None) -> None:
    """Take a queue slot and a rate token for a new run, or raise LimitExceeded.

    Call inside the transaction that creates the run, so a refused or failed creation leaves the
    counters as they were.
    """
    now = now or timezone.now()
    check_budgets(tenant, now=now, refusing="new runs")
    _take_rate_token(tenant, now)
    if not _take(tenant.pk, "queued_count", "max_queued_runs"):
        raise LimitExceeded(
            "max_queued_runs",
            f"Tenant {tenant.slug} already has {tenant.max_queued_runs} queued runs "
            "(max_queued_runs); retry when some have started.",
            retry_after=5,
            details={"cap": tenant.max_queued_runs},
        )


def _take_rate_token(tenant: Tenant, now: dt.datetime) -> None:
    if tenant.runs_per_minute is None:
        return
    window_start = now - RATE_WINDOW
    # A new window starts for whoever first finds the old one expired; the guard makes the
    # reset happen once even when several requests race.
    reset = Tenant.objects.filter(
        Q(rate_window_start__isnull=True) | Q(rate_window_start__lte=window_start), pk=tenant.pk
    ).update(rate_window_start=now, rate_window_count=1)
    if reset:
        return
    taken = Tenant.objects.filter(pk=tenant.pk, rate_window_count__lt=F("runs_per_minute")).update(
        rate_window_count=F("rate_window_count") + 1
    )
    if not taken:
        started = Tenant.objects.values_list("rate_window_start", flat=True).get(pk=tenant.pk)
        wait = (started + RATE_WINDOW - now).total_seconds() if started else 60
        raise LimitExceeded(
            "runs_per_minute",
            f"Tenant {tenant.slug} may start {tenant.runs_per_minute} runs per minute.",
            retry_after=max(1, math.ceil(wait)),
            details={"cap": tenant.runs_per_minute},
        )


def _take(tenant_id: int, counter: str, cap: str, *, stamp: str = "", when: Any = None) -> bool:
    """Add one to `counter` while it is below `cap` (and set `stamp` to `when`): one guarded
    UPDATE in plain SQL, since run creation and dispatch run it for every run."""
    q = connection.ops.quote_name
    sets, params = f"{q(counter)} = {q(counter)} + 1", [tenant_id]
    if stamp:
        prepared = cast(Field, Tenant._meta.get_field(stamp)).get_db_prep_save(when, connection)
        sets, params = f"{sets}, {q(stamp)} = %s", [prepared, tenant_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(Tenant._meta.db_table)} SET {sets} "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND {q(counter)} < {q(cap)}",
            params,
        )
        return cursor.rowcount == 1


def _decrement(tenant_id: int, counter: str) -> None:
    q, column = connection.ops.quote_name, connection.ops.quote_name(counter)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(Tenant._meta.db_table)} SET {column} = {column} - 1 "  # noqa: S608 - names from model meta
            f"WHERE {q('id')} = %s AND {column} > 0",
            [tenant_id],
        )


def release_queue_slot(tenant_id: int) -> None:
    _decrement(tenant_id, "queued_count")


def acquire_run_slot(tenant_id: int, *, dispatched_at: dt.datetime | None = None) -> bool:
    """Take one of the tenant's `max_concurrent_runs` slots; False when none is free. Also
    stamps `last_dispatched_at`, the dispatcher's round robin."""
    return _take(
        tenant_id,
        "running_count",
        "max_concurrent_runs",
        stamp="last_dispatched_at",
        when=dispatched_at or timezone.now(),
    )


def running_total() -> int:
    """Runs holding a concurrency slot across all tenants."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM({connection.ops.quote_name('running_count')}), 0) "  # noqa: S608
            f"FROM {connection.ops.quote_name(Tenant._meta.db_table)}"
        )
        return int(cursor.fetchone()[0])


def release_run_slot(tenant_id: int) -> None:
    _decrement(tenant_id, "running_count")


# --- usage ledger ----------------------------------------------------------------------------


def usage_shard(run_id: int) -> int:
    """The ledger shard a run's usage goes to (RUNYARD["USAGE_SHARDS"] rows per tenant-day).

    On PostgreSQL a step's ledger UPDATE holds the row until its transaction commits, so with
    one row per tenant and day every step of that tenant waited for the previous one's commit
    (bench/events.py: 100 concurrent runs of one tenant). Changing the count later is safe:
    readers sum whatever shards exist."""
    return run_id % max(1, int(settings.RUNYARD["USAGE_SHARDS"]))


def _increment_day(tenant_id: int, day: dt.date, shard: int, **amounts: int | Decimal) -> bool:
    """One plain UPDATE of the ledger row: this runs in every step's transaction."""
    q = connection.ops.quote_name
    columns = [q(cast(str, cast(Field, UsageDay._meta.get_field(name)).column)) for name in amounts]
    sets = ", ".join(f"{c} = {c} + %s" for c in columns)
    day_value = cast(Field, UsageDay._meta.get_field("day")).get_db_prep_save(day, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {q(UsageDay._meta.db_table)} SET {sets} WHERE {q('tenant_id')} = %s "  # noqa: S608 - names from model meta
            f"AND {q('day')} = %s AND {q('shard')} = %s",
            [*amounts.values(), tenant_id, day_value, shard],
        )
        return cursor.rowcount == 1


def record_usage(
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
) -> None:
    """Add to today's ledger row of `shard` (and per model). Call in the transaction of the
    change; a run's changes go to `usage_shard(run.pk)`."""
    day = day or timezone.now().date()
    cost = Decimal(str(cost_usd))
    increments = {
        "runs": F("runs") + runs,
        "steps": F("steps") + steps,
        "tokens_in": F("tokens_in") + tokens_in,
        "tokens_out": F("tokens_out") + tokens_out,
        "cost_usd": F("cost_usd") + cost,
    }
    if not _increment_day(
        tenant_id,
        day,
        shard,
        runs=runs,
        steps=steps,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
    ):
        _, created = UsageDay.objects.get_or_create(
            tenant_id=tenant_id,
            day=day,
            shard=shard,
            defaults={
                "runs": runs,
                "steps": steps,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost_usd": cost,
            },
        )
        if not created:  # another transaction created it between our UPDATE and INSERT
            UsageDay.objects.filter(tenant_id=tenant_id, day=day, shard=shard).update(**increments)
    for model, u in (by_model or {}).items():
        m_inc = {
            "calls": F("calls") + int(u.get("calls", 0)),
            "tokens_in": F("tokens_in") + int(u.get("tokens_in", 0)),
            "tokens_out": F("tokens_out") + int(u.get("tokens_out", 0)),
            "cost_usd": F("cost_usd") + Decimal(str(u.get("cost_usd", 0))),
        }
        row = UsageModelDay.objects.filter(tenant_id=tenant_id, day=day, model=model, shard=shard)
        if not row.update(**m_inc):
            _, created = UsageModelDay.objects.get_or_create(
                tenant_id=tenant_id,
                day=day,
                model=model,
                shard=shard,
                defaults={
                    "calls": int(u.get("calls", 0)),
                    "tokens_in": int(u.get("tokens_in", 0)),
                    "tokens_out": int(u.get("tokens_out", 0)),
                    "cost_usd": Decimal(str(u.get("cost_usd", 0))),
                },
            )
            if not created:
                row.update(**m_inc)


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


def _day_and_month(tenant_id: int, today: dt.date) -> tuple[Period, Period]:
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


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def budget_usage(tenant: Tenant, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Usage today and this month against the tenant's budgets, with reset times."""
    now = now or timezone.now()
    today = now.date()
    day, month = _day_and_month(tenant.pk, today)
    tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    month_reset = dt.datetime.combine(_next_month(today), dt.time(), dt.UTC)
    return {
        "day": {
            "usage": day,
            "resets_at": tomorrow,
            "token_budget": tenant.daily_token_budget,
            "cost_budget_usd": tenant.daily_cost_budget_usd,
        },
        "month": {
            "usage": month,
            "resets_at": month_reset,
            "token_budget": tenant.monthly_token_budget,
            "cost_budget_usd": tenant.monthly_cost_budget_usd,
        },
    }


def has_budgets(tenant: Tenant) -> bool:
    return any(
        [
            tenant.daily_token_budget,
            tenant.monthly_token_budget,
            tenant.daily_cost_budget_usd,
            tenant.monthly_cost_budget_usd,
        ]
    )


def check_spend(
    tenant: Tenant, *, tokens: int, cost_usd: float | Decimal, now: dt.datetime | None = None
) -> LimitExceeded | None:
    """The budget check of a step that spent `tokens` and `cost_usd`, race-free: the budget
    it crosses, or None.

    Call in the step's transaction, before its ledger increment (`record_usage`, last). The
    tenant row is locked until that transaction ends, so the spending steps of one tenant
    check one after another, each reading the ledger with every earlier one's usage in it
    (counted apart, concurrent runs each saw room and all went on). The run whose step
    crosses a budget stops there; a run whose step was in flight meanwhile stops at that
    step's commit: each overshoots by at most one step. Steps that spent nothing take no
    lock (`check_run_limits` stops them once the budget is used up).
    """
    cost = Decimal(str(cost_usd))
    if not has_budgets(tenant) or (tokens <= 0 and cost <= 0):
        return None
    # A no-op on SQLite, whose IMMEDIATE transactions already hold the database.
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    try:
        check_budgets(tenant, now=now, pending_tokens=tokens, pending_cost=cost)
    except LimitExceeded as exc:
        return exc
    return None


def check_budgets(
    tenant: Tenant,
    *,
    now: dt.datetime | None = None,
    refusing: str = "the run",
    pending_tokens: int = 0,
    pending_cost: Decimal = Decimal(0),
) -> None:
    """Raise LimitExceeded when a day or month token/cost budget is used up. Reads what is
    committed: concurrent callers may all see room (see `check_spend` for the race-free one)."""
    if not has_budgets(tenant):
        return
    now = now or timezone.now()
    usage = budget_usage(tenant, now=now)
    for period, name in (("day", "daily"), ("month", "monthly")):
        p = usage[period]
        # Usage being committed in the caller's transaction is not in the ledger yet.
        p["usage"].tokens += pending_tokens
        p["usage"].cost_usd += pending_cost
        resets = p["resets_at"]
        retry = max(1, math.ceil((resets - now).total_seconds()))
        if p["token_budget"] is not None and p["usage"].tokens >= p["token_budget"]:
            raise LimitExceeded(
                f"{name}_token_budget",
                f"The {name} token budget of {p['token_budget']} is used up "
                f"({p['usage'].tokens} used); {refusing} refused until it resets at "
                f"{resets.isoformat()}.",
                retry_after=retry,
                details={"resets_at": resets.isoformat()},
            )
        if p["cost_budget_usd"] is not None and p["usage"].cost_usd >= p["cost_budget_usd"]:
            raise LimitExceeded(
                f"{name}_cost_budget_usd",
                f"The {name} cost budget of ${p['cost_budget_usd']} is used up "
                f"(${p['usage'].cost_usd:.4f} used); {refusing} refused until it resets at "
                f"{resets.isoformat()}.",
                retry_after=retry,
                details={"resets_at": resets.isoformat()},
            )


# --- per-run limits at step boundaries ------------------------------------------------------


@dataclass
class RunLimitCheck:
    exceeded: LimitExceeded | None = None
    warnings: list[tuple[str, float, float]] = field(default_factory=list)  # (limit, used, cap)


def check_run_limits(
    tenant: Tenant,
    *,
    steps: int,
    tokens: int,
    cost_usd: Decimal | float,
    wall_seconds: float,
    already_warned: list[str],
    now: dt.datetime | None = None,
    step_tokens: int = 0,
    step_cost: Decimal | float = 0,
) -> RunLimitCheck:
    """Compare a run's counters with the tenant's per-run limits and budgets.

    Returns the first limit crossed (the run stops at this step boundary) and the limits past
    `warn_ratio` not warned about yet.
    """
    result = RunLimitCheck()
    caps: list[tuple[str, float, float | None]] = [
        ("max_steps", steps, tenant.max_steps),
        ("max_tokens", tokens, tenant.max_tokens),
        (
            "max_cost_usd",
            float(cost_usd),
            float(tenant.max_cost_usd) if tenant.max_cost_usd is not None else None,
        ),
        ("max_wall_seconds", wall_seconds, tenant.max_wall_seconds),
    ]
    ratio = float(tenant.warn_ratio)
    for name, used, cap in caps:
        if cap is None:
            continue
        # Tokens and cost may reach their cap but not pass it. A run that has used its steps
        # or its time cannot take another step (a run whose last step ended it succeeded).
        crossed = used > cap if name in ("max_tokens", "max_cost_usd") else used >= cap
        if crossed and result.exceeded is None:
            result.exceeded = LimitExceeded(
                name,
                f"The run crossed {name}={cap:g} ({used:g} used).",
                details={"cap": cap, "used": used},
            )
        elif used >= ratio * cap and name not in already_warned:
            result.warnings.append((name, used, cap))
    # A step that spent meets the budgets at its commit, race-free (`check_spend`); one that
    # spent nothing stops here once others have used them up.
    if result.exceeded is None and not (step_tokens or step_cost):
        try:
            check_budgets(
                tenant,
                now=now,
                refusing="the run",
                pending_tokens=step_tokens,
                pending_cost=Decimal(str(step_cost)),
            )
        except LimitExceeded as exc:
            result.exceeded = exc
    return result


# --- run trees (subgraphs) --------------------------------------------------------------------


def admit_child_run(
    tenant: Tenant,
    *,
    depth: int,
    max_depth: int,
    take_child: Callable[[int | None], bool],
    now: dt.datetime | None = None,
) -> None:
    """Admit a child run (a subgraph call) into a run tree, or raise LimitExceeded.

    The gate for children differs from `admit_run` on purpose:
    - no queue slot and no concurrency slot: a child runs inline in its parent's worker and
      inside the slot its root already holds. Asking for a second slot would deadlock a tenant
      capped at one concurrent run (the parent would wait for a slot it holds itself);
    - no `runs_per_minute` token: that limit paces requests to start runs, which a client can
      retry after `retry_after`; a child cannot wait, and refusing it would fail work that was
      admitted at its root. Children are instead bounded per root by `max_child_runs` (so
      run creation stays bounded by runs_per_minute * (1 + max_child_runs)) and by depth;
    - the day/month budgets apply as for any run: a used-up budget refuses the child.

    `max_depth` is the depth the calling graph allows, already clamped by the caller to the
    platform's ceiling; `take_child(cap)` takes one of the root's child slots with a guarded
    UPDATE on the root's row (the runs app owns that row) and says whether it got one. Call
    inside the transaction that creates the child, so a refusal leaves the counter as it was.
    """
    if depth > max_depth:
        raise LimitExceeded(
            "max_depth",
            f"A subgraph would nest {depth} deep; run trees are bounded at max_depth={max_depth}.",
            details={"cap": max_depth, "depth": depth},
        )
    check_budgets(tenant, now=now, refusing="new child runs")
    if not take_child(tenant.max_child_runs):
        raise LimitExceeded(
            "max_child_runs",
            f"The run tree already started {tenant.max_child_runs} child runs "
            f"(max_child_runs of tenant {tenant.slug}).",
            details={"cap": tenant.max_child_runs},
        )


# --- containment: a run's state --------------------------------------------------------------


def check_state_size(tenant: Tenant, size: int) -> LimitExceeded | None:
    """A run's state of `size` bytes (compact JSON) against the tenant's `max_state_bytes`.

    The caller measures: the runs app keeps an upper bound per step from the size of each
    update and serialises the whole state only when that bound passes the cap, so a normal
    step never pays for a second dump of its state.
    """
    cap = tenant.max_state_bytes
    if cap is None or size <= cap:
        return None
    return LimitExceeded(
        "max_state_bytes",
        f"The run's state would be {size} bytes, over max_state_bytes={cap}.",
        details={"cap": cap, "used": size},
    )
