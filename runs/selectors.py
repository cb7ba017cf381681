"""Read-side queries for the API: tenant-scoped lookups, list filters and keyset pagination.

Every query starts at a tenant-scoped queryset. Lists are keyset-paginated, never by offset:
a page is "rows strictly after the last row the client saw" in a total order, so rows
inserted while a client pages through a list are neither repeated nor make it skip rows.
Cursors are opaque (base64 JSON) so the order they encode can change without breaking clients.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.db.models import Count, Max, Q, QuerySet, Sum, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast, TruncDay, TruncHour
from django.utils import timezone

from runs.models import Artifact, Checkpoint, Event, Graph, Run, Step, Thread
from runs.services.errors import BadRequest, NotFound, public_id
from runs.status import TERMINAL, RunStatus
from tenants.models import Tenant, UsageDay

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# --- cursors -----------------------------------------------------------------------------------


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The values `encode_cursor` packed, checked against `types`; a 400 `invalid_cursor` if
    bad: the API documents a cursor's alphabet and length, not its content (it is opaque)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong arity")
        out: list[Any] = []
        for value, kind in zip(values, types, strict=True):
            if kind is dt.datetime:
                parsed = dt.datetime.fromisoformat(value)
                if timezone.is_naive(parsed):
                    raise ValueError("naive datetime")
                out.append(parsed)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("not an int")
                out.append(value)
            else:
                out.append(kind(value))
        return tuple(out)
    except (ValueError, TypeError, UnicodeError, binascii.Error, OverflowError) as exc:
        raise BadRequest(
            "cursor is not a cursor this list returned.",
            code="invalid_cursor",
            details={"field": "cursor"},
        ) from exc


def key_page(
    qs: QuerySet[Any], key: str, cursor: str | None, limit: int, *, descending: bool = False
) -> Page[Any]:
    """A page of `qs` ordered by the unique, immutable integer column `key` (newest first
    when `descending`); the cursor is the last row's key."""
    if cursor:
        (after,) = decode_cursor(cursor, int)
        qs = qs.filter(**{f"{key}__{'lt' if descending else 'gt'}": after})
    rows = list(qs.order_by(f"-{key}" if descending else key)[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], key)) if more and rows else None
    return Page(rows, next_cursor)


# --- graphs ------------------------------------------------------------------------------------


def graph_page(tenant: Tenant, *, cursor: str | None, limit: int) -> Page[Graph]:
    """The latest version of each of the tenant's graphs, by name."""
    names = Graph.objects.for_tenant(tenant).values("name").annotate(latest=Max("version"))
    if cursor:
        (after,) = decode_cursor(cursor, str)
        names = names.filter(name__gt=after)
    wanted = list(names.order_by("name")[: limit + 1])
    more = len(wanted) > limit
    wanted = wanted[:limit]
    q = Q(pk__in=[])
    for row in wanted:
        q |= Q(name=row["name"], version=row["latest"])
    rows = list(Graph.objects.for_tenant(tenant).filter(q).order_by("name"))
    return Page(rows, encode_cursor(rows[-1].name) if more and rows else None)


def graph_versions(tenant: Tenant, name: str) -> list[int]:
    return list(
        Graph.objects.for_tenant(tenant)
        .filter(name=name)
        .order_by("version")
        .values_list("version", flat=True)
    )


# --- threads -----------------------------------------------------------------------------------


def checkpoint_page(thread: Thread, *, cursor: str | None, limit: int) -> Page[Checkpoint]:
    """A thread's checkpoints, oldest first (run by run, step by step)."""
    qs = Checkpoint.objects.filter(thread=thread).select_related("run")
    return key_page(qs, "id", cursor, limit)


# --- runs --------------------------------------------------------------------------------------


@dataclass
class RunFilters:
    statuses: Sequence[str] = ()
    graph: str | None = None
    thread_id: uuid.UUID | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    # (key, value) pairs the run's metadata must all contain.
    metadata: list[tuple[str, str]] = field(default_factory=list)
    # Free text: a run id prefix, part of the graph's name, or text inside the metadata.
    search: str = ""


def _aware(value: dt.datetime) -> dt.datetime:
    return timezone.make_aware(value, dt.UTC) if timezone.is_naive(value) else value


def _metadata_match(qs: QuerySet[Run], n: int, key: str, value: str) -> QuerySet[Run]:
    # KeyTransform takes the key literally, so a key such as "a__in" cannot turn into a lookup.
    alias = f"_meta_{n}"
    qs = qs.alias(**{alias: KeyTransform(key, "metadata")})
    match = Q(**{alias: value})
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    # Query strings are text; `metadata.priority=2` also finds the number 2 and `=true` a bool.
    if isinstance(decoded, bool | int | float):
        match |= Q(**{alias: decoded})
    return qs.filter(match)


def filtered_runs(tenant: Tenant, filters: RunFilters) -> QuerySet[Run]:
    qs: QuerySet[Run] = Run.objects.for_tenant(tenant).select_related("graph", "thread")
    if filters.statuses:
        qs = qs.filter(status__in=list(filters.statuses))
    if filters.graph:
        qs = qs.filter(graph__name=filters.graph)
    if filters.thread_id:
        # The thread's pk first (one unique-index read), so the runs query is a seek in
        # run_thread_created; joined by public_id, PostgreSQL walked every thread's runs.
        thread_pk = (
            Thread.objects.for_tenant(tenant)
            .filter(public_id=filters.thread_id)
            .values_list("pk", flat=True)
            .first()
        )
        qs = qs.filter(thread_id=thread_pk) if thread_pk is not None else qs.none()
    if filters.created_after:
        qs = qs.filter(created_at__gt=_aware(filters.created_after))
    if filters.created_before:
        qs = qs.filter(created_at__lt=_aware(filters.created_before))
    for n, (key, value) in enumerate(filters.metadata):
        qs = _metadata_match(qs, n, key, value)
    if filters.search:
        qs = _search(qs, filters.search)
    return qs


SEARCH_MAX_CHARS = 100
_HEX = frozenset("0123456789abcdef")


def _search(qs: QuerySet[Run], text: str) -> QuerySet[Run]:
    """Runs whose id starts with `text`, whose graph name contains it, or whose metadata
    (as JSON text) contains it. The tenant's other filters narrow the rows first; the
    metadata match is a scan of those rows, bounded by the page size it stops at."""
    text = text.strip()[:SEARCH_MAX_CHARS]
    match = Q(graph__name__icontains=text)
    compact = text.lower().replace("-", "")
    if 4 <= len(compact) <= 32 and set(compact) <= _HEX:
        # PostgreSQL compares a uuid's text form, with its hyphens; on SQLite (32 hex digits)
        # Django strips them from the value. The canonical hyphenated prefix suits both.
        cuts = [c for c in (8, 12, 16, 20) if c < len(compact)]
        parts = [compact[a:b] for a, b in zip([0, *cuts], [*cuts, len(compact)], strict=True)]
        match |= Q(public_id__istartswith="-".join(parts))
    qs = qs.alias(_meta_text=Cast("metadata", TextField()))
    match |= Q(_meta_text__icontains=text)
    return qs.filter(match)


# The columns a run's API representation (runs/schemas.py RunOut) reads: a list page loads
# these alone, not the run's position, thread state, lease and counters (each JSON column is
# decoded per row, and `thread_state_before` can be as big as a thread's state).
RUN_OUT_FIELDS = (
    "public_id",
    "tenant_id",
    "status",
    "graph__name",
    "graph__version",
    "thread__public_id",
    "input",
    "state",
    "state_behind",
    "error",
    "steps",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "waiting_for",
    "created_at",
    "started_at",
    "finished_at",
    "metadata",
    "priority",
    "created_by",
)


def run_page(
    tenant: Tenant,
    filters: RunFilters,
    *,
    cursor: str | None,
    limit: int,
    only: tuple[str, ...] | None = None,
) -> Page[Run]:
    """Runs newest first, keyset-paginated on (created_at, id) descending. `only`: the
    fields to load (e.g. RUN_OUT_FIELDS); any other one read from a row costs a query.

    New runs sort before the cursor, so inserts while paging never shift later pages.
    """
    qs = filtered_runs(tenant, filters)
    if only:
        qs = qs.only(*only)
    return _newest_page(qs, cursor, limit, lambda r: (r.created_at, r.pk))


def run_values_page(
    tenant: Tenant,
    filters: RunFilters,
    *,
    cursor: str | None,
    limit: int,
    fields: tuple[str, ...],
    expressions: dict[str, Any],
) -> Page[dict[str, Any]]:
    """`run_page` as dicts of `fields` (column paths) and `expressions`, no model rows."""
    qs = filtered_runs(tenant, filters).values(*fields, "created_at", "pk", **expressions)
    return _newest_page(qs, cursor, limit, lambda r: (r["created_at"], r["pk"]))


def _newest_page(
    qs: QuerySet[Any], cursor: str | None, limit: int, key: Callable[[Any], tuple[Any, int]]
) -> Page[Any]:
    """A page of `qs` newest first from `cursor`; `key` gives a row's (created_at, pk), which
    the next page's cursor holds."""
    rows = list(_newest_first(qs, cursor)[: limit + 1])
    last = rows[limit - 1] if len(rows) > limit > 0 else None
    if last is None:
        return Page(rows[:limit], None)
    created_at, pk = key(last)
    return Page(rows[:limit], encode_cursor(created_at.isoformat(), pk))


def _newest_first(qs: QuerySet[Any], cursor: str | None) -> QuerySet[Any]:
    if cursor:
        created_at, pk = decode_cursor(cursor, dt.datetime, int)
        # `created_at <= cursor` too: a range both databases seek (run_tenant_created or
        # run_tenant_status). From the OR alone PostgreSQL derived no range and walked the
        # index from the newest run to the cursor: the deeper the page, the slower.
        qs = qs.filter(
            Q(created_at__lte=created_at),
            Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk),
        )
    return qs.order_by("-created_at", "-pk")


def step_page(run: Run, *, cursor: str | None, limit: int) -> Page[Step]:
    return key_page(Step.objects.filter(run=run), "index", cursor, limit)


def event_page(run: Run, *, after: int, limit: int, upto: int | None = None) -> Page[Event]:
    """Events after seq `after` (up to `upto`); `next_cursor` is the seq to pass as `after`
    when more exist."""
    events = Event.objects.filter(run=run, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    rows = list(events.order_by("seq")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1].seq) if more and rows else None)


def artifact_page(run: Run, *, cursor: str | None, limit: int) -> Page[Artifact]:
    qs = Artifact.objects.filter(run=run).select_related("run", "step")
    return key_page(qs, "id", cursor, limit)


def run_out(tenant: Tenant, run_id: Any) -> Run:
    """The run as its API representation (RunOut) reads it: those columns only, with its
    graph's name and version and its thread's id, not the graph's spec nor the tenant row
    (`services.get_run` loads both, for the services that act on the run)."""
    run = (
        Run.objects.for_tenant(tenant)
        .select_related("graph", "thread")
        .only(*RUN_OUT_FIELDS)
        .filter(public_id=public_id(run_id, "Run"))
        .first()
    )
    if run is None:
        raise NotFound(f"Run {run_id} does not exist.")
    return run


def get_artifact(tenant: Tenant, artifact_id: Any) -> Artifact:
    artifact = (
        Artifact.objects.for_tenant(tenant)
        .select_related("run", "step")
        .filter(public_id=public_id(artifact_id, "Artifact"))
        .first()
    )
    if artifact is None:
        raise NotFound(f"Artifact {artifact_id} does not exist.")
    return artifact


# --- live reads (async: the API's long polls hold no worker thread while they wait) -----------


async def arun_status(run_pk: int) -> str | None:
    """A run's status by primary key (one indexed read); None once the run is deleted."""
    return await Run.objects.filter(pk=run_pk).values_list("status", flat=True).afirst()


async def aevents_after(run_pk: int, after: int, limit: int = 500) -> list[Event]:
    return [
        event
        async for event in Event.objects.filter(run_id=run_pk, seq__gt=after).order_by("seq")[
            :limit
        ]
    ]


def is_settled(status: str | None) -> bool:
    """Finished, waiting on a human, or gone: where `GET /runs/{id}/wait` stops waiting."""
    return status is None or status in TERMINAL or status in ("waiting", "paused")


# --- overview and usage charts ------------------------------------------------------------------
# Every aggregate runs in the database over one tenant's index range and a bounded time window
# (run_tenant_created / run_tenant_status; uniq_usage_day_shard), so its cost does not grow
# with other tenants' rows or with the tenant's history outside the window.


def status_counts(tenant: Tenant) -> dict[str, int]:
    """How many of the tenant's runs are in each status now (statuses with none left out)."""
    rows = Run.objects.for_tenant(tenant).values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def runs_by_bucket(
    tenant: Tenant, *, since: dt.datetime, unit: str
) -> dict[dt.datetime, dict[str, int]]:
    """Runs created since `since`, counted per status per UTC hour or day (`unit`), keyed
    by the bucket's start; buckets without runs are absent."""
    trunc = {"hour": TruncHour, "day": TruncDay}[unit]
    rows = (
        Run.objects.for_tenant(tenant)
        .filter(created_at__gte=since)
        .annotate(bucket=trunc("created_at", tzinfo=dt.UTC))
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    out: dict[dt.datetime, dict[str, int]] = {}
    for row in rows:
        bucket = _aware(row["bucket"])
        out.setdefault(bucket, {})[row["status"]] = row["n"]
    return out


def recent_failures(tenant: Tenant, *, limit: int = 10) -> list[Run]:
    return list(
        Run.objects.for_tenant(tenant)
        .filter(status__in=[RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.INTERRUPTED])
        .select_related("graph")
        .order_by("-created_at", "-pk")[:limit]
    )


def waiting_approvals(tenant: Tenant, *, limit: int = 10) -> list[Run]:
    return list(
        Run.objects.for_tenant(tenant)
        .filter(status=RunStatus.WAITING, waiting_for__kind="approval")
        .select_related("graph")
        # Oldest first, in run_tenant_status's order: sorting by deadline made PostgreSQL
        # walk the wait_deadline index across every tenant's runs.
        .order_by("created_at")[:limit]
    )


@dataclass(frozen=True)
class DayUsage:
    day: dt.date
    tokens: int
    cost_usd: Decimal


def usage_per_day(tenant: Tenant, first: dt.date, last: dt.date) -> dict[dt.date, DayUsage]:
    """The ledger per day between two days (inclusive), its shards summed in the database."""
    rows = (
        UsageDay.objects.filter(tenant=tenant, day__gte=first, day__lte=last)
        .values("day")
        .annotate(tin=Sum("tokens_in"), tout=Sum("tokens_out"), cost=Sum("cost_usd"))
        .order_by()
    )
    return {
        row["day"]: DayUsage(
            row["day"], int(row["tin"] or 0) + int(row["tout"] or 0), row["cost"] or Decimal(0)
        )
        for row in rows
    }
