"""`/assistants`: graph versions and created assistants (lg/assistants.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from lg import assistants
from lg.api.common import body, ident, manager, reader

router = Router(tags=["assistants"])


@router.post("/assistants")
def create_assistant(request: HttpRequest) -> Any:
    ctx = manager(request)
    return assistants.create_assistant(ctx.tenant, body(request))


@router.post("/assistants/search")
def search_assistants(request: HttpRequest) -> Any:
    ctx = reader(request)
    return assistants.search(ctx.tenant, body(request))


@router.post("/assistants/count")
def count_assistants(request: HttpRequest) -> Any:
    ctx = reader(request)
    return assistants.count(ctx.tenant, body(request))


@router.get("/assistants/{assistant_id}")
def get_assistant(request: HttpRequest, assistant_id: str) -> Any:
    ctx = reader(request)
    return assistants.resolve(ctx.tenant, ident(assistant_id)).out


@router.patch("/assistants/{assistant_id}")
def update_assistant(request: HttpRequest, assistant_id: str) -> Any:
    ctx = manager(request)
    return assistants.update_assistant(ctx.tenant, ident(assistant_id), body(request))


@router.delete("/assistants/{assistant_id}", response={204: None})
def delete_assistant(request: HttpRequest, assistant_id: str) -> Any:
    ctx = manager(request)
    assistants.delete_assistant(ctx.tenant, ident(assistant_id))
    return HttpResponse(status=204)


@router.get("/assistants/{assistant_id}/graph")
def get_assistant_graph(request: HttpRequest, assistant_id: str, xray: str = "false") -> Any:
    ctx = reader(request)
    resolved = assistants.resolve(ctx.tenant, ident(assistant_id))
    return assistants.graph_drawing(resolved, ctx.tenant)


@router.get("/assistants/{assistant_id}/schemas")
def get_assistant_schemas(request: HttpRequest, assistant_id: str) -> Any:
    ctx = reader(request)
    resolved = assistants.resolve(ctx.tenant, ident(assistant_id))
    return assistants.schemas(resolved, ctx.tenant)


@router.get("/assistants/{assistant_id}/subgraphs")
def get_assistant_subgraphs(request: HttpRequest, assistant_id: str) -> Any:
    ctx = reader(request)
    assistants.resolve(ctx.tenant, ident(assistant_id))
    return {}  # a subgraph node starts another graph's run; none is drawn inline


@router.post("/assistants/{assistant_id}/versions")
def list_assistant_versions(request: HttpRequest, assistant_id: str) -> Any:
    ctx = reader(request)
    return assistants.versions(ctx.tenant, ident(assistant_id), body(request))


@router.post("/assistants/{assistant_id}/latest")
def set_latest_assistant_version(request: HttpRequest, assistant_id: str) -> Any:
    ctx = manager(request)
    return assistants.set_latest(ctx.tenant, ident(assistant_id), body(request).get("version"))
