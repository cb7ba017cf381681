"""`/store`: the tenant's key-value store (lg/store.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from lg import store
from lg.api.common import body, reader, writer

router = Router(tags=["store"])


@router.put("/store/items", response={204: None})
def put_store_item(request: HttpRequest) -> Any:
    ctx = writer(request)
    store.put_item(ctx.tenant, body(request))
    return HttpResponse(status=204)


@router.get("/store/items")
def get_store_item(request: HttpRequest, namespace: str = "", key: str = "") -> Any:
    ctx = reader(request)
    return store.get_item(ctx.tenant, namespace, key)


@router.delete("/store/items", response={204: None})
def delete_store_item(request: HttpRequest) -> Any:
    ctx = writer(request)
    store.delete_item(ctx.tenant, body(request))
    return HttpResponse(status=204)


@router.post("/store/items/search")
def search_store_items(request: HttpRequest) -> Any:
    ctx = reader(request)
    return store.search_items(ctx.tenant, body(request))


@router.post("/store/namespaces")
def list_store_namespaces(request: HttpRequest) -> Any:
    ctx = reader(request)
    return store.list_namespaces(ctx.tenant, body(request))
