"""`/runs/crons` and `/threads/{id}/runs/crons`: cron jobs as Runyard schedules (lg/crons.py).
Viewers search and count; members create, change and delete (a schedule starts runs)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from lg import crons
from lg.api.common import body, ident, reader, writer

router = Router(tags=["crons"])


@router.post("/runs/crons")
def create_cron(request: HttpRequest) -> Any:
    ctx = writer(request)
    return crons.create_cron(ctx, body(request), thread_id=None)


@router.post("/threads/{thread_id}/runs/crons")
def create_thread_cron(request: HttpRequest, thread_id: str) -> Any:
    ctx = writer(request)
    return crons.create_cron(ctx, body(request), thread_id=ident(thread_id))


@router.post("/runs/crons/search")
def search_crons(request: HttpRequest) -> Any:
    ctx = reader(request)
    return crons.search(ctx.tenant, body(request))


@router.post("/runs/crons/count")
def count_crons(request: HttpRequest) -> Any:
    ctx = reader(request)
    return crons.count(ctx.tenant, body(request))


@router.patch("/runs/crons/{cron_id}")
def update_cron(request: HttpRequest, cron_id: str) -> Any:
    ctx = writer(request)
    return crons.update_cron(ctx, crons.get_cron(ctx.tenant, ident(cron_id)), body(request))


@router.delete("/runs/crons/{cron_id}", response={204: None})
def delete_cron(request: HttpRequest, cron_id: str) -> Any:
    ctx = writer(request)
    crons.delete_cron(ctx, crons.get_cron(ctx.tenant, ident(cron_id)))
    return HttpResponse(status=204)
