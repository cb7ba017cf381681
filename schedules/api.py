"""Schedules over the API: `/api/v1/crons`. Viewers read; members create, change and delete
(a schedule starts runs, which needs the member role)."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Query, Router, Status

from runs.api.common import caller, ensure_json_size, member
from runs.selectors import Page
from schedules import selectors, services
from schedules.models import Cron
from schedules.schemas import CronDetailOut, CronFiltersIn, CronIn, CronListOut, CronPatchIn
from tenants.schemas import error_responses

router = Router(tags=["crons"])


@router.post(
    "/crons",
    response={201: CronDetailOut, **error_responses(400, 403, 404, 409, 413)},
    summary="Create a schedule",
    description=(
        "Starts `graph` with `input` at every tick of `schedule` (cron, five fields) in "
        "`timezone` (IANA, default UTC). Refusals no schema can state, each a 422 whose "
        "`details.field` names the field: an expression croniter refuses or one that never "
        "fires (`invalid_schedule`), a zone the zone database does not know "
        "(`invalid_timezone`), an `end_time` before the first tick "
        "(`end_time_before_first_tick`), `input` against the graph's `input_schema` "
        "(`invalid_input`), a `webhook` the tenant's HTTP allow-list refuses "
        "(`webhook_refused`). An unknown graph, version or thread is a 404; past "
        "`MAX_CRONS_PER_TENANT` a 409 `too_many_schedules`. Each run goes through the "
        "tenant's limits like any run and carries `metadata.cron_id`. Needs the member role."
    ),
)
def create_cron(request: HttpRequest, payload: CronIn) -> Status[Cron]:
    ctx = member(request)
    ensure_json_size(payload.input, "input")
    ensure_json_size(payload.metadata, "metadata")
    cron = services.create_cron(
        ctx.tenant,
        graph=payload.graph,
        version=payload.version,
        input=payload.input,
        schedule=payload.schedule,
        timezone=payload.timezone,
        thread_id=str(payload.thread_id) if payload.thread_id else None,
        enabled=payload.enabled,
        metadata=payload.metadata,
        priority=payload.priority,
        multitask_strategy=payload.multitask_strategy,
        end_time=payload.end_time,
        webhook=payload.webhook or "",
        by=ctx.actor_label,
    )
    return Status(201, services.get_cron(ctx.tenant, cron.public_id))


@router.get(
    "/crons",
    response={200: CronListOut, **error_responses(400)},
    summary="List schedules",
    description=(
        "Newest first; filter by `graph` and `enabled`; keyset cursor pagination (400 "
        "`invalid_cursor` for a cursor no list returned)."
    ),
)
def list_crons(request: HttpRequest, filters: Query[CronFiltersIn]) -> Page[Cron]:
    ctx = caller(request)
    return selectors.cron_page(
        ctx.tenant,
        graph=filters.graph,
        enabled=filters.enabled,
        cursor=filters.cursor,
        limit=filters.limit,
    )


@router.get(
    "/crons/{cron_id}",
    response={200: CronDetailOut, **error_responses(404)},
    summary="Get a schedule",
    description="With its latest fires (tick, outcome, run or error), newest first.",
)
def get_cron(request: HttpRequest, cron_id: uuid.UUID) -> Cron:
    ctx = caller(request)
    return services.get_cron(ctx.tenant, cron_id)


@router.patch(
    "/crons/{cron_id}",
    response={200: CronDetailOut, **error_responses(400, 403, 404, 413)},
    summary="Change a schedule",
    description=(
        "Only the fields sent change. Changing `schedule` or `timezone`, or enabling, moves "
        "`next_run_at` to the first tick from now; disabling clears it. Values are checked as "
        "on create, with the same 422 codes (`invalid_schedule`, `invalid_timezone`, "
        "`end_time_before_first_tick`, `invalid_input`, `webhook_refused`). Needs the member "
        "role."
    ),
)
def update_cron(request: HttpRequest, cron_id: uuid.UUID, payload: CronPatchIn) -> Cron:
    ctx = member(request)
    ensure_json_size(payload.input, "input")
    ensure_json_size(payload.metadata, "metadata")
    cron = services.get_cron(ctx.tenant, cron_id)
    return services.update_cron(cron, by=ctx.actor_label, **payload.changes())


@router.delete(
    "/crons/{cron_id}",
    response={204: None, **error_responses(403, 404)},
    summary="Delete a schedule",
    description="Its fire history goes with it; the runs it started stay. Member role.",
)
def delete_cron(request: HttpRequest, cron_id: uuid.UUID) -> Status[None]:
    ctx = member(request)
    services.delete_cron(services.get_cron(ctx.tenant, cron_id), by=ctx.actor_label)
    return Status(204, None)
