"""Crons through the protocol: LangGraph's cron jobs are Runyard's schedules (schedules/).

The assistant names the graph (and version) a schedule starts; `schedule`, `timezone`,
`input`, `metadata`, `enabled`, `multitask_strategy`, `end_time`, `webhook` and the thread
are the schedule's own fields, checked and fired by schedules/ like any schedule (each run carries
`metadata.cron_id`). The protocol's run options Runyard stores without acting on them
(`config`, `context`, stream options, `durability`) are kept in lg.CronOptions and returned
in the cron's `payload`. What Runyard's schedules cannot do is refused with a 422.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet

from lg import assistants, threads
from lg.assistants import metadata_filter, page_of
from lg.errors import Refused, not_found
from lg.models import CronOptions
from lg.runs import REFUSED, stream_modes
from runs.api.common import ensure_json_size
from runs.models import Graph
from runs.services.create import STRATEGIES
from schedules import services
from schedules.models import Cron
from tenants.auth import TenantContext
from tenants.models import Tenant

# Stored with the schedule and returned in its payload; not acted on (no one streams a
# scheduled run, and every step of every run is checkpointed anyway).
STORED = ("config", "context", "stream_mode", "stream_subgraphs", "stream_resumable", "durability")
# Options a cron may have that Runyard's schedules do not honour.
CRON_REFUSED = {
    "interrupt_before": REFUSED["interrupt_before"],
    "interrupt_after": REFUSED["interrupt_after"],
}
CREATE_KEYS = {
    "assistant_id",
    "schedule",
    "input",
    "metadata",
    "enabled",
    "timezone",
    "multitask_strategy",
    "on_run_completed",
    "checkpoint_during",
    "end_time",
    "webhook",
    *STORED,
    *CRON_REFUSED,
}
UPDATE_KEYS = CREATE_KEYS - {"assistant_id", "multitask_strategy"}
SORTS = {
    "cron_id": "public_id",
    "assistant_id": "graph_name",
    "thread_id": "thread__public_id",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "next_run_date": "next_run_at",
    "end_time": "end_time",
}
SELECTABLE = frozenset(
    {
        "cron_id",
        "assistant_id",
        "thread_id",
        "end_time",
        "schedule",
        "timezone",
        "created_at",
        "updated_at",
        "user_id",
        "payload",
        "next_run_date",
        "metadata",
        "now",
        "on_run_completed",
        "enabled",
    }
)


def _check(payload: dict[str, Any], allowed: set[str], *, threaded: bool) -> dict[str, Any]:
    """The stored options of `payload`, once every option is known and honoured."""
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise Refused(f"Unknown cron options {unknown}.")
    for option, why in CRON_REFUSED.items():
        if payload.get(option):
            raise Refused(why)
    completed = payload.get("on_run_completed")
    if completed is not None:
        if threaded:
            raise Refused("`on_run_completed` applies to stateless crons (POST /runs/crons) only.")
        if completed != "delete":
            # A stateless run in Runyard has no thread: there is none to delete, or to keep.
            raise Refused(
                "`on_run_completed` must be delete: a stateless cron's runs have no thread, "
                "so none is kept; read them by metadata.cron_id."
            )
    if payload.get("durability") not in (None, "sync", "async", "exit"):
        raise Refused("`durability` must be sync, async or exit.")
    if payload.get("multitask_strategy") not in (None, *STRATEGIES):
        raise Refused("`multitask_strategy` must be reject, interrupt, rollback or enqueue.")
    for name in ("input", "metadata", "context"):
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            raise Refused(f"`{name}` must be a JSON object.")
    for name in ("schedule", "timezone"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise Refused(f"`{name}` must be a string.")
    if payload.get("enabled") is not None and not isinstance(payload["enabled"], bool):
        raise Refused("`enabled` must be true or false.")
    for name in ("input", "metadata", "config", "context"):
        ensure_json_size(payload.get(name), name)
    stored: dict[str, Any] = {}
    if "config" in payload:
        stored["config"] = assistants.check_config(payload["config"])
    if "context" in payload:
        stored["context"] = payload["context"] or {}
    if payload.get("stream_mode") is not None:
        stored["stream_mode"] = stream_modes(payload["stream_mode"], ["values"])
    for name in ("stream_subgraphs", "stream_resumable"):
        if payload.get(name) is not None:
            stored[name] = bool(payload[name])
    if payload.get("durability") is not None:
        stored["durability"] = payload["durability"]
    return stored


def _end_time(value: Any) -> dt.datetime | None:
    """The protocol's `end_time` (ISO 8601; without an offset, UTC)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise Refused("`end_time` must be an ISO 8601 date-time.")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Refused("`end_time` must be an ISO 8601 date-time.") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _webhook(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise Refused("`webhook` must be an http or https URL.")
    return value or ""


def _crons(tenant: Tenant) -> QuerySet[Cron]:
    return Cron.objects.for_tenant(tenant).select_related("thread", "lg_options")


def get_cron(tenant: Tenant, cron_id: str) -> Cron:
    try:
        public_id = uuid.UUID(cron_id)
    except ValueError:
        raise not_found("Cron", cron_id) from None
    cron = _crons(tenant).filter(public_id=public_id).first()
    if cron is None:
        raise not_found("Cron", cron_id)
    return cron


def create_cron(
    ctx: TenantContext, payload: dict[str, Any], *, thread_id: str | None
) -> dict[str, Any]:
    """A schedule starting the assistant's graph; on a thread for `thread_id`."""
    stored = _check(payload, CREATE_KEYS, threaded=thread_id is not None)
    if not isinstance(payload.get("assistant_id"), str) or not payload["assistant_id"]:
        raise Refused("`assistant_id` is required: a graph's name or an assistant's id.")
    if not payload.get("schedule"):
        raise Refused("`schedule` is required: a cron expression such as '0 9 * * *'.")
    resolved = assistants.resolve(ctx.tenant, payload["assistant_id"][:100])
    thread = threads.get_thread(ctx.tenant, thread_id) if thread_id is not None else None
    if resolved.created is not None:
        stored.setdefault("config", resolved.out["config"])
        stored.setdefault("context", resolved.out["context"])
    with transaction.atomic():
        cron = services.create_cron(
            ctx.tenant,
            graph=resolved.graph_name,
            version=resolved.graph_version,
            input=payload.get("input") or {},
            schedule=payload["schedule"],
            timezone=payload.get("timezone") or "UTC",
            thread_id=str(thread.public_id) if thread is not None else None,
            enabled=payload.get("enabled", True),
            metadata=payload.get("metadata") or {},
            multitask_strategy=payload.get("multitask_strategy") or "reject",
            end_time=_end_time(payload.get("end_time")),
            webhook=_webhook(payload.get("webhook")),
            by=ctx.actor_label,
        )
        CronOptions.objects.create(
            cron=cron,
            assistant_id=str(resolved.created.public_id) if resolved.created else "",
            payload=stored,
        )
    return cron_out(get_cron(ctx.tenant, str(cron.public_id)))


def update_cron(ctx: TenantContext, cron: Cron, payload: dict[str, Any]) -> dict[str, Any]:
    """Only the fields sent change; `metadata` and `input` are replaced whole; `end_time:
    null` removes the end (the SDK sends it only when asked to)."""
    stored = _check(payload, UPDATE_KEYS, threaded=cron.thread_id is not None)
    changes: dict[str, Any] = {
        name: payload[name]
        for name in ("schedule", "timezone", "input", "metadata", "enabled")
        if payload.get(name) is not None
    }
    if "end_time" in payload:
        changes["end_time"] = _end_time(payload["end_time"])
    if payload.get("webhook") is not None:
        changes["webhook"] = _webhook(payload["webhook"])
    with transaction.atomic():
        if changes:
            services.update_cron(cron, by=ctx.actor_label, **changes)
        if stored:
            options, _ = CronOptions.objects.select_for_update().get_or_create(cron=cron)
            options.payload = {**options.payload, **stored}
            options.save(update_fields=["payload"])
    return cron_out(get_cron(ctx.tenant, str(cron.public_id)))


def delete_cron(ctx: TenantContext, cron: Cron) -> None:
    services.delete_cron(cron, by=ctx.actor_label)


def _filtered(tenant: Tenant, payload: dict[str, Any]) -> QuerySet[Cron]:
    qs = _crons(tenant)
    assistant_id = payload.get("assistant_id")
    if assistant_id:
        resolved = assistants.resolve(tenant, str(assistant_id)[:100])
        if resolved.created is not None:
            qs = qs.filter(lg_options__assistant_id=str(resolved.created.public_id))
        else:
            qs = qs.filter(graph_name=resolved.graph_name).exclude(lg_options__assistant_id__gt="")
            if resolved.graph_version is not None:
                qs = qs.filter(graph_version=resolved.graph_version)
    thread_id = payload.get("thread_id")
    if thread_id:
        qs = qs.filter(thread=threads.get_thread(tenant, str(thread_id)[:100]))
    enabled = payload.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise Refused("`enabled` must be true or false.")
        qs = qs.filter(enabled=enabled)
    for key, value in metadata_filter(payload.get("metadata")).items():
        qs = qs.filter(**{f"metadata__{key}": value})
    return qs


def search(tenant: Tenant, payload: dict[str, Any]) -> list[dict[str, Any]]:
    limit, offset = page_of(payload)
    sort_by = payload.get("sort_by") or "created_at"
    order = payload.get("sort_order") or "desc"
    if not isinstance(sort_by, str) or sort_by not in SORTS or order not in ("asc", "desc"):
        raise Refused(f"`sort_by` must be one of {sorted(SORTS)} and `sort_order` asc or desc.")
    select = payload.get("select")
    if select is not None and (
        not isinstance(select, list)
        or not all(isinstance(k, str) and k in SELECTABLE for k in select)
    ):
        raise Refused(f"`select` must be a list of fields among {sorted(SELECTABLE)}.")
    field, tie = F(SORTS[sort_by]), F("id")
    # Crons without an end (or a next run) come last either way, on every database.
    ordering = (
        (field.desc(nulls_last=True), tie.desc())
        if order == "desc"
        else (field.asc(nulls_last=True), tie.asc())
    )
    rows = list(_filtered(tenant, payload).order_by(*ordering)[offset : offset + limit])
    out = crons_out(rows)
    if select:
        out = [{k: c[k] for k in select if k in c} for c in out]
    return out


def count(tenant: Tenant, payload: dict[str, Any]) -> int:
    unknown = sorted(set(payload) - {"assistant_id", "thread_id", "metadata", "enabled"})
    if unknown:
        raise Refused(f"Unknown filters {unknown}.")
    return _filtered(tenant, payload).count()


def _graph_assistant_ids(crons: list[Cron]) -> dict[tuple[str, int | None], str]:
    """The graph-version assistant each schedule runs: its pinned version's id, or the newest
    version's for one that follows the latest. One query for the page."""
    names = {c.graph_name for c in crons}
    if not crons or not names:
        return {}
    ids: dict[tuple[str, int | None], str] = {}
    graphs = Graph.objects.filter(tenant_id=crons[0].tenant_id, name__in=names).order_by(
        "name", "version"
    )
    for name, version, public_id in graphs.values_list("name", "version", "public_id"):
        ids[(name, version)] = str(public_id)
        ids[(name, None)] = str(public_id)  # ordered by version: the newest wins
    return ids


def crons_out(crons: list[Cron]) -> list[dict[str, Any]]:
    ids = _graph_assistant_ids(crons)
    return [cron_out(c, ids) for c in crons]


def _options(cron: Cron) -> CronOptions | None:
    try:
        return cron.lg_options  # type: ignore[no-any-return]
    except CronOptions.DoesNotExist:
        return None


def cron_out(cron: Cron, ids: dict[tuple[str, int | None], str] | None = None) -> dict[str, Any]:
    """A schedule as the protocol's Cron (langgraph_sdk.schema.Cron)."""
    ids = ids if ids is not None else _graph_assistant_ids([cron])
    options = _options(cron)
    assistant_id = (options.assistant_id if options is not None else "") or ids.get(
        (cron.graph_name, cron.graph_version), cron.graph_name
    )
    stored = dict(options.payload) if options is not None else {}
    thread_id = str(cron.thread.public_id) if cron.thread is not None else None
    return {
        "cron_id": str(cron.public_id),
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "on_run_completed": None if thread_id else "delete",
        "end_time": cron.end_time,
        "schedule": cron.schedule,
        "timezone": cron.timezone,
        "created_at": cron.created_at,
        "updated_at": cron.updated_at,
        "payload": {
            "assistant_id": assistant_id,
            "graph_id": cron.graph_name,
            "graph_version": cron.graph_version,
            "input": cron.input,
            "metadata": cron.metadata,
            "multitask_strategy": cron.multitask_strategy,
            "webhook": cron.webhook or None,
            "config": stored.pop("config", {}),
            "context": stored.pop("context", {}),
            **stored,
        },
        "user_id": cron.created_by or None,
        "next_run_date": cron.next_run_at,
        "metadata": cron.metadata,
        "enabled": cron.enabled,
    }
