"""The per-tenant key-value store of `/lg/store`: items under namespaces (lists of labels).

Stored with labels joined by "." (the SDK refuses labels holding one; so does this), so a
namespace prefix is a string prefix on an indexed column. Bounded: labels, keys, values and
the number of items a tenant keeps. Semantic search (`query`), vector indexes and TTLs are
refused with a 422.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from lg.errors import Refused, not_found
from lg.models import StoreItem
from tenants.models import Tenant

MAX_LABELS = 10
MAX_LABEL_CHARS = 48
MAX_KEY_CHARS = 500
MAX_VALUE_BYTES = 64 * 1024
# A soft cap per tenant (a count before the insert: a burst may pass it by a few).
MAX_ITEMS_PER_TENANT = 100_000
MAX_PAGE = 1000


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def namespace_of(value: Any, *, allow_empty: bool = False) -> str:
    if isinstance(value, str):
        value = value.split(".") if value else []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused("`namespace` must be a list of labels.")
    if (not value and not allow_empty) or len(value) > MAX_LABELS:
        raise Refused(f"A namespace has 1 to {MAX_LABELS} labels.")
    for label in value:
        if not label or "." in label or len(label) > MAX_LABEL_CHARS:
            raise Refused(
                f"Namespace label {label[:60]!r} must be 1-{MAX_LABEL_CHARS} characters, no '.'."
            )
    return ".".join(value)


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
        raise Refused(f"`key` must be a string of 1-{MAX_KEY_CHARS} characters.")
    return value


def item_out(item: StoreItem) -> dict[str, Any]:
    return {
        "namespace": item.namespace.split("."),
        "key": item.key,
        "value": item.value,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }


def put_item(tenant: Tenant, payload: dict[str, Any]) -> None:
    if payload.get("index") not in (None, False):
        raise Refused("Vector indexes are not supported: pass no `index` (or false).")
    if payload.get("ttl") is not None:
        raise Refused("Item TTLs are not supported: items are kept until deleted.")
    namespace, key = namespace_of(payload.get("namespace")), _key(payload.get("key"))
    value = payload.get("value")
    if not isinstance(value, dict):
        raise Refused("`value` must be a JSON object.")
    if json_size(value) > MAX_VALUE_BYTES:
        raise Refused(f"`value` is over {MAX_VALUE_BYTES} bytes.", status=413)
    items = StoreItem.objects.for_tenant(tenant)
    if items.filter(namespace=namespace, key=key).update(value=value) or 0:
        return
    if items.count() >= MAX_ITEMS_PER_TENANT:
        raise Refused(
            f"This tenant's store holds {MAX_ITEMS_PER_TENANT} items already.", status=429
        )
    try:
        with transaction.atomic():
            StoreItem.objects.create(tenant=tenant, namespace=namespace, key=key, value=value)
    except IntegrityError:  # a concurrent put made it first: this one wins as an update
        items.filter(namespace=namespace, key=key).update(value=value)


def get_item(tenant: Tenant, namespace: Any, key: Any) -> dict[str, Any]:
    ns, key = namespace_of(namespace), _key(key)
    item = StoreItem.objects.for_tenant(tenant).filter(namespace=ns, key=key).first()
    if item is None:
        raise not_found("Item", f"{ns}/{key}")
    return item_out(item)


def delete_item(tenant: Tenant, payload: dict[str, Any]) -> None:
    ns, key = namespace_of(payload.get("namespace")), _key(payload.get("key"))
    StoreItem.objects.for_tenant(tenant).filter(namespace=ns, key=key).delete()


def _page(payload: dict[str, Any], default: int) -> tuple[int, int]:
    limit, offset = payload.get("limit", default), payload.get("offset", 0)
    for name, value in (("limit", limit), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Refused(f"`{name}` must be a non-negative integer.")
    if limit > MAX_PAGE or offset > 1_000_000:
        raise Refused(f"`limit` is at most {MAX_PAGE} and `offset` at most 1000000.")
    return limit, offset


def _under(prefix: str) -> Q:
    return Q(namespace=prefix) | Q(namespace__startswith=prefix + ".") if prefix else Q()


def search_items(tenant: Tenant, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("query"):
        raise Refused("Semantic search (`query`) is not supported; filter by value instead.")
    prefix = namespace_of(payload.get("namespace_prefix") or [], allow_empty=True)
    limit, offset = _page(payload, 10)
    items = StoreItem.objects.for_tenant(tenant).filter(_under(prefix))
    wanted = payload.get("filter") or {}
    if not isinstance(wanted, dict) or len(wanted) > 20:
        raise Refused("`filter` must be an object of at most 20 keys.")
    for key, value in wanted.items():
        if not key.replace("_", "").replace("-", "").isalnum() or len(key) > 64:
            raise Refused(f"Filter key {key[:64]!r} must be letters, digits, '_' or '-'.")
        items = items.filter(**{f"value__{key}": value})
    rows = items.order_by("namespace", "key")[offset : offset + limit]
    return {"items": [{**item_out(i), "score": None} for i in rows]}


def list_namespaces(tenant: Tenant, payload: dict[str, Any]) -> dict[str, Any]:
    prefix = namespace_of(payload.get("prefix") or [], allow_empty=True)
    suffix = payload.get("suffix")
    suffix_labels = namespace_of(suffix).split(".") if suffix else []
    depth = payload.get("max_depth")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise Refused("`max_depth` must be a positive integer.")
    limit, offset = _page(payload, 100)
    names = (
        StoreItem.objects.for_tenant(tenant)
        .filter(_under(prefix))
        .order_by("namespace")
        .values_list("namespace", flat=True)
        .distinct()
    )
    seen: list[list[str]] = []
    for name in names.iterator(chunk_size=1000):
        labels = name.split(".")
        if suffix_labels and labels[-len(suffix_labels) :] != suffix_labels:
            continue
        if depth is not None:
            labels = labels[:depth]
        if labels not in seen:
            seen.append(labels)
        if len(seen) >= offset + limit:
            break
    return {"namespaces": seen[offset : offset + limit]}
