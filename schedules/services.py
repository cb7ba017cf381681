"""Schedules' use cases: create, change, enable/disable and delete a tenant's crons.

Everything a schedule will need at fire time is checked when it is written (expression, zone,
graph, input against the graph's input_schema, thread), so a fire fails only for what changed
since (limits, budgets, a busy thread, a graph version gone). Firing lives in firing.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone as djtz

from runs.engine import validate_input
from runs.engine.values import Unstorable, storable_size
from runs.services.create import STRATEGIES, get_thread
from runs.services.errors import Conflict, NotFound, ValidationFailed, public_id
from runs.services.graphs import get_graph, problems_to_details, spec_for
from schedules.cronexpr import InvalidSchedule, check_expression, next_tick, zone
from schedules.models import Cron
from tenants.models import Tenant

# What PATCH and update_cron may change.
UPDATABLE = frozenset(
    {
        "graph",
        "version",
        "input",
        "schedule",
        "timezone",
        "thread_id",
        "enabled",
        "metadata",
        "priority",
        "multitask_strategy",
        "end_time",
        "webhook",
    }
)


def field_error(field: str, message: str, *, code: str = "validation_error") -> ValidationFailed:
    """A 422 naming `field`, shaped like the API's own validation errors."""
    return ValidationFailed(
        message,
        code=code,
        details={"field": field, "problems": [{"where": field, "in": "body", "message": message}]},
    )


def get_cron(tenant: Tenant, cron_id: Any) -> Cron:
    """The tenant's schedule `cron_id` (public UUID); NotFound for anyone else's."""
    cron = (
        Cron.objects.for_tenant(tenant)
        .select_related("tenant", "thread", "last_run")
        .filter(public_id=public_id(cron_id, "Schedule"))
        .first()
    )
    if cron is None:
        raise NotFound(f"Schedule {cron_id} does not exist.")
    return cron


def _ensure_storable(value: Any, field: str) -> None:
    try:
        storable_size(value)
    except Unstorable as exc:
        raise field_error(
            field,
            f"{field} holds a value that cannot be stored: {exc.reason}.",
            code="invalid_json_value",
        ) from None


def _first_tick(expression: str, tz: str, now: dt.datetime) -> dt.datetime:
    try:
        return next_tick(expression, tz, now)
    except InvalidSchedule as exc:
        raise field_error(exc.field, exc.message, code=exc.code) from None


def _apply(cron: Cron, values: dict[str, Any], *, now: dt.datetime) -> None:
    """Check `values` (public field names) and set them on `cron`, recomputing `next_run_at`
    when the timing or the enabled flag changed."""
    tenant = cron.tenant
    timing_before = (cron.schedule, cron.timezone, cron.enabled, cron.end_time)
    if "schedule" in values:
        try:
            cron.schedule = check_expression(values["schedule"])
        except InvalidSchedule as exc:
            raise field_error(exc.field, exc.message, code=exc.code) from None
    if "timezone" in values:
        tz = values["timezone"] if values["timezone"] is not None else "UTC"
        try:
            zone(tz)
        except InvalidSchedule as exc:
            raise field_error(exc.field, exc.message, code=exc.code) from None
        cron.timezone = tz
    if "priority" in values:
        priority = values["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 5:
            raise field_error("priority", "priority must be an integer from 1 to 5.")
        cron.priority = priority
    if "multitask_strategy" in values:
        if values["multitask_strategy"] not in STRATEGIES:
            raise field_error(
                "multitask_strategy", f"multitask_strategy must be one of {', '.join(STRATEGIES)}."
            )
        cron.multitask_strategy = values["multitask_strategy"]
    for field in ("input", "metadata"):
        if field in values:
            value = values[field] if values[field] is not None else {}
            if not isinstance(value, dict):
                raise field_error(field, f"{field} must be a JSON object.")
            _ensure_storable(value, field)
            setattr(cron, field, value)
    if "thread_id" in values:
        thread_id = values["thread_id"]
        cron.thread = get_thread(tenant, thread_id) if thread_id else None
    if "graph" in values:
        cron.graph_name = values["graph"]
    if "version" in values:
        cron.graph_version = values["version"] or None
    if "enabled" in values:
        cron.enabled = bool(values["enabled"])
    if "end_time" in values:
        end_time = values["end_time"]
        if end_time is not None and (
            not isinstance(end_time, dt.datetime) or djtz.is_naive(end_time)
        ):
            raise field_error("end_time", "end_time must be a date-time with a UTC offset.")
        if end_time is not None:
            try:
                end_time = end_time.astimezone(dt.UTC)
            except OverflowError:
                raise field_error("end_time", "end_time is out of range.") from None
        cron.end_time = end_time
    if "webhook" in values:
        from webhooks.services import check_destination

        webhook = values["webhook"]
        cron.webhook = check_destination(tenant, webhook, field="webhook") if webhook else ""
    if values.keys() & {"graph", "version", "input"}:
        graph_row = get_graph(tenant, cron.graph_name, cron.graph_version)
        problems = validate_input(spec_for(graph_row), cron.input)
        if problems:
            raise ValidationFailed(
                "input does not match the graph's input_schema: "
                + "; ".join(f"{p.where}: {p.message}" for p in problems[:5]),
                code="invalid_input",
                details={**problems_to_details(problems), "field": "input"},
            )
    timing = (cron.schedule, cron.timezone, cron.enabled, cron.end_time)
    if cron.pk is None or timing != timing_before:
        cron.next_run_at = _first_tick(cron.schedule, cron.timezone, now) if cron.enabled else None
        end, first = cron.end_time, cron.next_run_at
        if end is not None and first is not None and first > end:
            raise field_error(
                "end_time",
                f"end_time {end.isoformat()} is before the schedule's next tick "
                f"({first.isoformat()}): it would never fire.",
                code="end_time_before_first_tick",
            )


def create_cron(
    tenant: Tenant,
    *,
    graph: str,
    schedule: str,
    version: int | None = None,
    input: dict[str, Any] | None = None,
    timezone: str | None = "UTC",
    thread_id: Any = None,
    enabled: bool = True,
    metadata: dict[str, Any] | None = None,
    priority: int = 3,
    multitask_strategy: str = "reject",
    end_time: dt.datetime | None = None,
    webhook: str = "",
    by: str = "",
    now: dt.datetime | None = None,
) -> Cron:
    """Check and store a schedule; its `next_run_at` is its first tick after `now`.

    `end_time`: no tick after it fires (422 when the first tick is already later); `webhook`:
    each run's webhook, checked against the tenant's HTTP allow-list now and at every fire.

    Raises ValidationFailed (422, `details.field` names the field: schedule, timezone,
    priority, input, end_time, webhook...), NotFound (graph, version, thread), Conflict
    (`too_many_schedules` past the tenant's MAX_CRONS_PER_TENANT)."""
    now = now or djtz.now()
    cron = Cron(tenant=tenant, created_by=by[:200])
    _apply(
        cron,
        {
            "graph": graph,
            "version": version,
            "input": input if input is not None else {},
            "schedule": schedule,
            "timezone": timezone,
            "thread_id": thread_id,
            "enabled": enabled,
            "metadata": metadata if metadata is not None else {},
            "priority": priority,
            "multitask_strategy": multitask_strategy,
            "end_time": end_time,
            "webhook": webhook,
        },
        now=now,
    )
    cap = int(settings.RUNYARD["MAX_CRONS_PER_TENANT"])
    with transaction.atomic():
        # The tenant's row lock makes the count and the insert one step for concurrent creates.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).exists()
        if Cron.objects.for_tenant(tenant).count() >= cap:
            raise Conflict(
                f"Tenant {tenant.slug} already has {cap} schedules (MAX_CRONS_PER_TENANT); "
                "delete one first.",
                code="too_many_schedules",
                details={"cap": cap},
            )
        cron.save()
    return cron


def update_cron(
    cron: Cron, *, by: str = "", now: dt.datetime | None = None, **changes: Any
) -> Cron:
    """Change the fields in `changes` (names as in the API: graph, version, input, schedule,
    timezone, thread_id, enabled, metadata, priority, multitask_strategy, end_time, webhook).
    Changing the timing or the end, or enabling, moves `next_run_at` to the first tick after
    now; disabling clears it.

    The row is locked while it changes, so a scheduler firing it at the same moment either
    fires the old tick first or sees the new `next_run_at` and does not fire."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise field_error(sorted(unknown)[0], f"{sorted(unknown)[0]} cannot be changed.")
    now = now or djtz.now()
    with transaction.atomic():
        locked = Cron.objects.select_for_update().filter(pk=cron.pk).first()
        if locked is None:
            raise NotFound(f"Schedule {cron.public_id} does not exist.")
        locked.tenant = cron.tenant
        _apply(locked, changes, now=now)
        locked.save()
    return get_cron(cron.tenant, cron.public_id)


def set_cron_enabled(cron: Cron, enabled: bool, *, by: str = "") -> Cron:
    return update_cron(cron, enabled=enabled, by=by)


def delete_cron(cron: Cron, *, by: str = "") -> None:
    """Delete the schedule and its fire history; the runs it started stay."""
    Cron.objects.filter(pk=cron.pk).delete()
