"""`/threads`: Runyard threads, their state, checkpoints and history (lg/threads.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from lg import threads
from lg.api.common import body, ident, reader, writer
from lg.errors import Refused

router = Router(tags=["threads"])


@router.post("/threads")
def create_thread(request: HttpRequest) -> Any:
    ctx = writer(request)
    thread = threads.create_thread(ctx.tenant, body(request))
    return threads.thread_out(thread)


@router.post("/threads/search")
def search_threads(request: HttpRequest) -> Any:
    ctx = reader(request)
    return threads.search(ctx.tenant, body(request))


@router.post("/threads/count")
def count_threads(request: HttpRequest) -> Any:
    ctx = reader(request)
    return threads.search(ctx.tenant, body(request), count=True)


@router.post("/threads/prune")
def prune_threads(request: HttpRequest) -> Any:
    writer(request)
    raise Refused("Pruning is not supported through /lg; delete threads one by one.")


@router.get("/threads/{thread_id}")
def get_thread(request: HttpRequest, thread_id: str) -> Any:
    ctx = reader(request)
    return threads.thread_out(threads.get_thread(ctx.tenant, ident(thread_id)))


@router.patch("/threads/{thread_id}")
def update_thread(request: HttpRequest, thread_id: str) -> Any:
    ctx = writer(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.thread_out(threads.update_thread(thread, body(request)))


@router.delete("/threads/{thread_id}", response={204: None})
def delete_thread(request: HttpRequest, thread_id: str) -> Any:
    ctx = writer(request)
    threads.delete_thread(threads.get_thread(ctx.tenant, ident(thread_id)))
    return HttpResponse(status=204)


@router.post("/threads/{thread_id}/copy")
def copy_thread(request: HttpRequest, thread_id: str) -> Any:
    ctx = writer(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.thread_out(threads.copy_thread(thread))


@router.get("/threads/{thread_id}/state")
def get_thread_state(request: HttpRequest, thread_id: str) -> Any:
    ctx = reader(request)
    return threads.current_state(threads.get_thread(ctx.tenant, ident(thread_id)))


@router.post("/threads/{thread_id}/state")
def update_thread_state(request: HttpRequest, thread_id: str) -> Any:
    ctx = writer(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.update_state(thread, body(request))


@router.post("/threads/{thread_id}/state/checkpoint")
def get_thread_state_at_checkpoint(request: HttpRequest, thread_id: str) -> Any:
    ctx = reader(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    checkpoint = threads.checkpoint_id_of(body(request).get("checkpoint"))
    if not checkpoint:
        return threads.current_state(thread)
    return threads.state_at(thread, checkpoint)


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
def get_thread_state_at(request: HttpRequest, thread_id: str, checkpoint_id: str) -> Any:
    ctx = reader(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.state_at(thread, ident(checkpoint_id))


@router.post("/threads/{thread_id}/history")
def get_thread_history(request: HttpRequest, thread_id: str) -> Any:
    ctx = reader(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.history(thread, body(request))


@router.get("/threads/{thread_id}/history")
def get_thread_history_get(request: HttpRequest, thread_id: str, limit: int = 10) -> Any:
    ctx = reader(request)
    thread = threads.get_thread(ctx.tenant, ident(thread_id))
    return threads.history(thread, {"limit": limit})
