"""`/runs` and `/threads/{id}/runs`: background, streamed and waited runs (lg/runs.py), their
SSE streams (lg/stream.py), joins, cancels and deletes."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from ninja import Router

from lg import runs, shapes, stream, thread_stream, threads
from lg.api.common import body, ident, reader, writer
from lg.errors import Refused
from lg.models import RunOptions
from runs import selectors, streams
from runs.api.live import wait_until_settled
from runs.models import Run
from runs.status import TERMINAL
from tenants.auth import TenantContext

router = Router(tags=["runs"])

# How long `/wait` and `/join` hold a request for a run that has not settled. Past it they
# answer with the run's values so far; the SDK's reconnect (Location) asks again.
WAIT_MAX_SECONDS = 600.0
WAIT_SLICE_SECONDS = 30.0
CANCEL_ACTIONS = ("interrupt", "rollback")


def _locations(request: HttpRequest, run: Run) -> tuple[str | None, str | None, str | None]:
    """The run, its stream and its join, as paths under the protocol's root (`/threads/...`,
    without `/lg`): both SDKs resolve Location and Content-Location against the URL they were
    given (`.../lg`), the JS one by plain concatenation, as LangGraph's server sends them.
    They follow them to reconnect and read run and thread ids from them. None for a
    stateless run."""
    if run.thread is None:
        return None, None, None
    kwargs = {"thread_id": str(run.thread.public_id), "run_id": str(run.public_id)}
    root = reverse("lg:ok").removesuffix("ok")

    def under_root(name: str) -> str:
        return "/" + reverse(name, kwargs=kwargs).removeprefix(root)

    return under_root("lg:get_run"), under_root("lg:join_run_stream"), under_root("lg:join_run")


def _json(
    data: Any, *, status: int = 200, headers: dict[str, str | None] | None = None
) -> HttpResponse:
    from lg.api.base import Renderer

    response = HttpResponse(
        Renderer().render(None, data, response_status=status),  # type: ignore[arg-type]
        status=status,
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        if value:
            response[name] = value
    return response


# --- create -------------------------------------------------------------------------------------


def _create(request: HttpRequest, thread_id: str | None) -> HttpResponse:
    ctx = writer(request)
    started = runs.start_run(ctx, body(request), thread_id=thread_id)
    run_url, _, _ = _locations(request, started.run)
    return _json(shapes.run_out(started.run), headers={"Content-Location": run_url})


@router.post("/threads/{thread_id}/runs")
def create_run(request: HttpRequest, thread_id: str) -> HttpResponse:
    return _create(request, ident(thread_id))


@router.post("/runs")
def create_stateless_run(request: HttpRequest) -> HttpResponse:
    return _create(request, None)


@router.post("/runs/batch")
def create_run_batch(request: HttpRequest) -> Any:
    ctx = writer(request)
    items = body(request, array=True)
    if not items or len(items) > runs.MAX_BATCH:
        raise Refused(f"A batch holds 1 to {runs.MAX_BATCH} runs.")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise Refused("Each run of a batch must be a JSON object.")
        item = dict(item)
        thread_id = item.pop("thread_id", None)
        started = runs.start_run(ctx, item, thread_id=str(thread_id) if thread_id else None)
        out.append(shapes.run_out(started.run))
    return out


async def _stream(request: HttpRequest, thread_id: str | None) -> StreamingHttpResponse:
    ctx = writer(request)
    payload = body(request)
    # The stream's slot first: a tenant at its stream limit gets a 429 and no run.
    slot = streams.slots.acquire(ctx.tenant.pk)
    try:
        started = await sync_to_async(runs.start_run)(ctx, payload, thread_id=thread_id)
        run = await stream.arun(started.run.pk)
        run_url, stream_url, _ = await sync_to_async(_locations)(request, run)
    except BaseException:
        slot.release()
        raise
    return stream.stream_response(
        ctx,
        run,
        started.modes,
        (started.cursor, stream.WHOLE),
        location=stream_url,
        content_location=run_url,
        cancel_on_disconnect=started.on_disconnect == "cancel",
        subgraphs=started.subgraphs,
        slot=slot,
    )


@router.post("/threads/{thread_id}/runs/stream")
async def create_run_stream(request: HttpRequest, thread_id: str) -> StreamingHttpResponse:
    return await _stream(request, ident(thread_id))


@router.post("/runs/stream")
async def create_stateless_run_stream(request: HttpRequest) -> StreamingHttpResponse:
    return await _stream(request, None)


async def _settle(ctx: TenantContext, run: Run, slot: streams.Slot | None = None) -> Run:
    """The run once it has settled (finished, or waiting on a human), or as it is after
    WAIT_MAX_SECONDS. Holds one of the tenant's stream slots meanwhile (`slot`, when the
    caller took it already)."""
    slot = slot or streams.slots.acquire(ctx.tenant.pk)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_MAX_SECONDS
        while loop.time() < deadline:
            status = await selectors.arun_status(run.pk)
            if selectors.is_settled(status):
                break
            await wait_until_settled(ctx, run, min(WAIT_SLICE_SECONDS, deadline - loop.time()))
    finally:
        slot.release()
    return await stream.arun(run.pk)


async def _wait(request: HttpRequest, thread_id: str | None) -> HttpResponse:
    ctx = writer(request)
    payload = body(request)
    slot = streams.slots.acquire(ctx.tenant.pk)  # before the run: a 429 leaves no run behind
    try:
        started = await sync_to_async(runs.start_run)(ctx, payload, thread_id=thread_id)
    except BaseException:
        slot.release()
        raise
    run = await _settle(ctx, started.run, slot)
    values = await sync_to_async(runs.final_values)(run)
    run_url, _, join_url = await sync_to_async(_locations)(request, run)
    return _json(values, headers={"Content-Location": run_url, "Location": join_url})


@router.post("/threads/{thread_id}/runs/wait")
async def create_run_wait(request: HttpRequest, thread_id: str) -> HttpResponse:
    return await _wait(request, ident(thread_id))


@router.post("/runs/wait")
async def create_stateless_run_wait(request: HttpRequest) -> HttpResponse:
    return await _wait(request, None)


# --- one run ------------------------------------------------------------------------------------


@router.get("/threads/{thread_id}/runs")
def list_runs(
    request: HttpRequest,
    thread_id: str,
    limit: int = 10,
    offset: int = 0,
    status: str | None = None,
) -> Any:
    ctx = reader(request)
    rows = runs.list_runs(ctx, ident(thread_id), limit=limit, offset=offset, status=status)
    return [shapes.run_out(r) for r in rows]


@router.get("/threads/{thread_id}/runs/{run_id}")
def get_run(request: HttpRequest, thread_id: str, run_id: str) -> Any:
    ctx = reader(request)
    return shapes.run_out(runs.get_run(ctx, ident(thread_id), ident(run_id)))


@router.delete("/threads/{thread_id}/runs/{run_id}", response={204: None})
def delete_run(request: HttpRequest, thread_id: str, run_id: str) -> Any:
    ctx = writer(request)
    runs.delete_run(runs.get_run(ctx, ident(thread_id), ident(run_id)))
    return HttpResponse(status=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponse:
    ctx = reader(request)
    run = await sync_to_async(runs.get_run)(ctx, ident(thread_id), ident(run_id))
    run = await _settle(ctx, run)
    return _json(await sync_to_async(runs.final_values)(run))


def _options(run: Run) -> RunOptions | None:
    return RunOptions.objects.filter(run=run).first()


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_run_stream(
    request: HttpRequest, thread_id: str, run_id: str
) -> StreamingHttpResponse:
    ctx = reader(request)
    run = await sync_to_async(runs.get_run)(ctx, ident(thread_id), ident(run_id))
    options = await sync_to_async(_options)(run)
    asked = [m for m in request.GET.getlist("stream_mode") if m]
    default = (
        options.stream_mode
        if options is not None and options.stream_mode
        else list(runs.STREAM_MODES)
    )
    modes = runs.stream_modes(asked or None, default)
    last_event_id = request.headers.get("Last-Event-ID")
    cursor = stream.parse_last_event_id(last_event_id)
    resumed = cursor is not None and last_event_id.strip() != "-1"  # type: ignore[union-attr]
    if cursor is None:
        cursor = (run.last_seq, stream.WHOLE)  # a join without an id gets what comes next
    cancel = request.GET.get("cancel_on_disconnect", "").lower() in ("1", "true")
    # A join (and the SDK's reconnect, which sends no parameters) streams subgraphs when the
    # run was started with stream_subgraphs.
    subgraphs = bool(options is not None and options.kwargs.get("stream_subgraphs"))
    run_url, stream_url, _ = await sync_to_async(_locations)(request, run)
    return stream.stream_response(
        ctx,
        run,
        modes,
        cursor,
        location=stream_url,
        content_location=run_url,
        cancel_on_disconnect=cancel,
        resumed=resumed,
        subgraphs=subgraphs,
    )


def _cancel(request: HttpRequest, run: Run, action: str) -> None:
    from runs import services

    if action not in CANCEL_ACTIONS:
        raise Refused("`action` must be interrupt or rollback.")
    if run.status in TERMINAL:
        return
    services.cancel_run(run, action=action, by=writer(request).actor_label)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    request: HttpRequest, thread_id: str, run_id: str, wait: str = "0", action: str = "interrupt"
) -> HttpResponse:
    ctx = writer(request)
    run = await sync_to_async(runs.get_run)(ctx, ident(thread_id), ident(run_id))
    await sync_to_async(_cancel)(request, run, action)
    if wait.lower() in ("1", "true"):
        slot = streams.slots.acquire(ctx.tenant.pk)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_MAX_SECONDS
            while loop.time() < deadline and await selectors.arun_status(run.pk) not in TERMINAL:
                await asyncio.sleep(0.1)
        finally:
            slot.release()
    run = await stream.arun(run.pk)
    return _json(await sync_to_async(shapes.run_out)(run), status=200 if wait != "0" else 202)


@router.post("/runs/cancel", response={204: None})
def cancel_runs(request: HttpRequest, action: str = "interrupt") -> Any:
    ctx = writer(request)
    if action not in CANCEL_ACTIONS:
        raise Refused("`action` must be interrupt or rollback.")
    runs.cancel_many(ctx, body(request), action=action)
    return HttpResponse(status=204)


@router.get("/threads/{thread_id}/stream")
async def join_thread_stream(request: HttpRequest, thread_id: str) -> StreamingHttpResponse:
    ctx = reader(request)
    thread = await sync_to_async(threads.get_thread)(ctx.tenant, ident(thread_id))
    modes = thread_stream.thread_modes([m for m in request.GET.getlist("stream_mode") if m])
    return thread_stream.thread_stream_response(
        ctx, thread, modes, request.headers.get("Last-Event-ID")
    )
