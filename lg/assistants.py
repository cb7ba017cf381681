"""Assistants: every graph version is one (assistant_id = the version's public id, graph_id =
the graph's name), a graph's name names its newest version, and `POST /assistants` makes a
named, versioned configuration over a graph (lg.models.Assistant).

Config and context of an assistant are stored and returned; Runyard's graphs read their
parameters from run input, so runs record them (RunOptions.kwargs) without handing them to
nodes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max, QuerySet

from lg.errors import Refused, conflict, not_found
from lg.models import Assistant, AssistantVersion
from runs.models import Graph
from runs.services import spec_for
from tenants.models import Tenant

CONFIG_KEYS = frozenset({"tags", "recursion_limit", "configurable"})
SORTS = {"assistant_id", "graph_id", "name", "created_at", "updated_at"}
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PAGE = 1000
GRAPH_METADATA = {"created_by": "system"}


@dataclass
class Resolved:
    """An assistant as runs see it: which graph (and version) a run on it starts."""

    assistant_id: str
    graph_name: str
    graph_version: int | None
    out: dict[str, Any]
    created: Assistant | None = None
    graph: Graph | None = None


def graph_assistant(graph: Graph) -> dict[str, Any]:
    return {
        "assistant_id": str(graph.public_id),
        "graph_id": graph.name,
        "config": {},
        "context": {},
        "metadata": dict(GRAPH_METADATA),
        "version": graph.version,
        "name": graph.name,
        "description": f"{graph.name} version {graph.version}",
        "created_at": graph.created_at,
        "updated_at": graph.created_at,
    }


def created_assistant(assistant: Assistant, version: AssistantVersion) -> dict[str, Any]:
    return {
        "assistant_id": str(assistant.public_id),
        "graph_id": assistant.graph_name,
        "config": version.config,
        "context": version.context,
        "metadata": version.metadata,
        "version": version.version,
        "name": version.name,
        "description": version.description or None,
        "created_at": assistant.created_at,
        "updated_at": version.created_at,
    }


def _current(assistant: Assistant) -> AssistantVersion:
    return assistant.versions.get(version=assistant.version)


def resolve(tenant: Tenant, assistant_id: str) -> Resolved:
    """The assistant `assistant_id` names: a graph version's or a created assistant's id, or
    a graph's name (its newest version). Another tenant's is not found."""
    try:
        public_id = uuid.UUID(str(assistant_id))
    except ValueError:
        public_id = None
    if public_id is not None:
        graph = Graph.objects.for_tenant(tenant).filter(public_id=public_id).first()
        if graph is not None:
            return Resolved(
                str(graph.public_id), graph.name, graph.version, graph_assistant(graph), graph=graph
            )
        assistant = Assistant.objects.for_tenant(tenant).filter(public_id=public_id).first()
        if assistant is not None:
            version = _current(assistant)
            return Resolved(
                str(assistant.public_id),
                assistant.graph_name,
                version.graph_version,
                created_assistant(assistant, version),
                created=assistant,
            )
        raise not_found("Assistant", assistant_id)
    graph = (
        Graph.objects.for_tenant(tenant)
        .filter(name=str(assistant_id)[:100])
        .order_by("-version")
        .first()
    )
    if graph is None:
        raise not_found("Assistant", assistant_id)
    return Resolved(str(graph.public_id), graph.name, None, graph_assistant(graph), graph=graph)


def _check_object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(f"`{field}` must be a JSON object.")
    return value


def check_config(config: Any) -> dict[str, Any]:
    config = _check_object(config, "config")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise Refused(
            f"config keys {unknown} are not supported; Runyard accepts {sorted(CONFIG_KEYS)} "
            "(stored with the assistant or run, not passed to nodes)."
        )
    return config


def _latest_graph(tenant: Tenant, name: Any) -> Graph:
    if not isinstance(name, str) or not name:
        raise Refused("`graph_id` must name one of the tenant's graphs.")
    graph = Graph.objects.for_tenant(tenant).filter(name=name[:100]).order_by("-version").first()
    if graph is None:
        raise not_found("Graph", name)
    return graph


@transaction.atomic
def create_assistant(tenant: Tenant, payload: dict[str, Any]) -> dict[str, Any]:
    graph = _latest_graph(tenant, payload.get("graph_id"))
    config = check_config(payload.get("config"))
    context = _check_object(payload.get("context"), "context")
    metadata = _check_object(payload.get("metadata"), "metadata")
    if_exists = payload.get("if_exists") or "raise"
    if if_exists not in ("raise", "do_nothing"):
        raise Refused("`if_exists` must be raise or do_nothing.")
    wanted = payload.get("assistant_id")
    public_id = uuid.uuid4()
    if wanted:
        try:
            public_id = uuid.UUID(str(wanted))
        except ValueError:
            raise Refused("`assistant_id` must be a UUID.") from None
        existing = Assistant.objects.filter(public_id=public_id).first()
        taken = existing is not None or Graph.objects.filter(public_id=public_id).exists()
        if taken:
            if (
                existing is not None
                and existing.tenant_id == tenant.pk
                and if_exists == "do_nothing"
            ):
                return created_assistant(existing, _current(existing))
            raise conflict(f"Assistant {public_id} already exists.")
    assistant = Assistant.objects.create(tenant=tenant, public_id=public_id, graph_name=graph.name)
    version = AssistantVersion.objects.create(
        assistant=assistant,
        version=1,
        name=str(payload.get("name") or graph.name)[:200],
        description=str(payload.get("description") or "")[:2000],
        config=config,
        context=context,
        metadata=metadata,
    )
    return created_assistant(assistant, version)


def _own(tenant: Tenant, assistant_id: str, what: str) -> Assistant:
    resolved = resolve(tenant, assistant_id)
    if resolved.created is None:
        raise Refused(
            f"Assistant {assistant_id} is graph {resolved.graph_name} version "
            f"{resolved.out['version']}: graph versions are immutable and cannot be {what}. "
            "Create an assistant over the graph (POST /assistants) to configure one."
        )
    return resolved.created


@transaction.atomic
def update_assistant(tenant: Tenant, assistant_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A PATCH adds a version (the fields given over the current one) and makes it current."""
    assistant = _own(tenant, assistant_id, "changed")
    assistant = Assistant.objects.select_for_update().get(pk=assistant.pk)
    current = _current(assistant)
    graph_name = assistant.graph_name
    if payload.get("graph_id"):
        graph_name = _latest_graph(tenant, payload["graph_id"]).name
    number = (assistant.versions.aggregate(v=Max("version"))["v"] or 0) + 1
    version = AssistantVersion.objects.create(
        assistant=assistant,
        version=number,
        name=str(payload.get("name") or current.name)[:200],
        description=str(payload.get("description") or current.description)[:2000],
        config=check_config(payload["config"]) if "config" in payload else current.config,
        context=_check_object(payload["context"], "context")
        if "context" in payload
        else current.context,
        metadata={**current.metadata, **_check_object(payload.get("metadata"), "metadata")},
        graph_version=current.graph_version,
    )
    Assistant.objects.filter(pk=assistant.pk).update(graph_name=graph_name, version=number)
    assistant.graph_name, assistant.version = graph_name, number
    return created_assistant(assistant, version)


def delete_assistant(tenant: Tenant, assistant_id: str) -> None:
    _own(tenant, assistant_id, "deleted").delete()


@transaction.atomic
def set_latest(tenant: Tenant, assistant_id: str, version: Any) -> dict[str, Any]:
    assistant = _own(tenant, assistant_id, "re-pointed")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Refused("`version` must be an integer.")
    row = assistant.versions.filter(version=version).first()
    if row is None:
        raise not_found(f"Version {version} of assistant", assistant_id)
    Assistant.objects.filter(pk=assistant.pk).update(version=version)
    assistant.version = version
    return created_assistant(assistant, row)


def versions(tenant: Tenant, assistant_id: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    resolved = resolve(tenant, assistant_id)
    limit, offset = page_of(payload)
    metadata = metadata_filter(payload.get("metadata"))
    if resolved.created is not None:
        rows = resolved.created.versions.order_by("-version")
        for key, value in metadata.items():
            rows = rows.filter(**{f"metadata__{key}": value})
        return [created_assistant(resolved.created, v) for v in rows[offset : offset + limit]]
    if metadata and not _matches(GRAPH_METADATA, metadata):
        return []
    graphs = Graph.objects.for_tenant(tenant).filter(name=resolved.graph_name).order_by("-version")
    return [graph_assistant(g) for g in graphs[offset : offset + limit]]


def page_of(payload: dict[str, Any]) -> tuple[int, int]:
    limit, offset = payload.get("limit", 10), payload.get("offset", 0)
    for name, value in (("limit", limit), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Refused(f"`{name}` must be a non-negative integer.")
    if limit > MAX_PAGE or offset > 1_000_000:
        raise Refused(f"`limit` is at most {MAX_PAGE} and `offset` at most 1000000.")
    return limit, offset


def metadata_filter(value: Any) -> dict[str, Any]:
    value = _check_object(value, "metadata")
    if len(value) > 20:
        raise Refused("A filter holds at most 20 keys.")
    for key in value:
        if not METADATA_KEY.fullmatch(key):
            raise Refused(f"Filter key {key!r} must be 1-64 letters, digits, '_' or '-'.")
    return value


def _matches(data: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(data.get(k) == v for k, v in wanted.items())


def _created_rows(tenant: Tenant, payload: dict[str, Any]) -> QuerySet[AssistantVersion]:
    rows = AssistantVersion.objects.filter(
        assistant__tenant=tenant, version=models_current()
    ).select_related("assistant")
    if payload.get("graph_id"):
        rows = rows.filter(assistant__graph_name=str(payload["graph_id"])[:100])
    if payload.get("name"):
        rows = rows.filter(name__icontains=str(payload["name"])[:200])
    for key, value in metadata_filter(payload.get("metadata")).items():
        rows = rows.filter(**{f"metadata__{key}": value})
    return rows


def models_current() -> Any:
    from django.db.models import F

    return F("assistant__version")


def _graph_rows(tenant: Tenant, payload: dict[str, Any]) -> QuerySet[Graph] | None:
    if not _matches(GRAPH_METADATA, metadata_filter(payload.get("metadata"))):
        return None
    rows = Graph.objects.for_tenant(tenant)
    if payload.get("graph_id"):
        rows = rows.filter(name=str(payload["graph_id"])[:100])
    if payload.get("name"):
        rows = rows.filter(name__icontains=str(payload["name"])[:200])
    return rows


def search(tenant: Tenant, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Graph versions and created assistants together, sorted and paged. Each source is read
    up to offset + limit rows in the wanted order, so a page costs two bounded queries."""
    limit, offset = page_of(payload)
    sort_by = payload.get("sort_by") or "created_at"
    order = payload.get("sort_order") or "desc"
    if not isinstance(sort_by, str) or sort_by not in SORTS or order not in ("asc", "desc"):
        raise Refused(f"`sort_by` must be one of {sorted(SORTS)} and `sort_order` asc or desc.")
    sign = "-" if order == "desc" else ""
    graph_field = {"assistant_id": "public_id", "graph_id": "name", "name": "name"}.get(
        sort_by, "created_at"
    )
    created_field = {
        "assistant_id": "assistant__public_id",
        "graph_id": "assistant__graph_name",
        "name": "name",
        "created_at": "assistant__created_at",
        "updated_at": "created_at",
    }[sort_by]
    window = offset + limit
    out: list[dict[str, Any]] = []
    graphs = _graph_rows(tenant, payload)
    if graphs is not None:
        out += [
            graph_assistant(g) for g in graphs.order_by(sign + graph_field, sign + "id")[:window]
        ]
    created = _created_rows(tenant, payload).order_by(sign + created_field, sign + "id")[:window]
    out += [created_assistant(v.assistant, v) for v in created]
    out.sort(key=lambda a: str(a[sort_by]), reverse=order == "desc")
    page = out[offset : offset + limit]
    select = payload.get("select")
    if select:
        if not isinstance(select, list) or not all(isinstance(s, str) for s in select):
            raise Refused("`select` must be a list of field names.")
        page = [{k: a[k] for k in select if k in a} for a in page]
    return page


def count(tenant: Tenant, payload: dict[str, Any]) -> int:
    graphs = _graph_rows(tenant, payload)
    return (graphs.count() if graphs is not None else 0) + _created_rows(tenant, payload).count()


def graph_drawing(resolved: Resolved, tenant: Tenant) -> dict[str, Any]:
    """Nodes and edges as LangGraph draws a graph: `__start__` and `__end__` included."""
    spec = spec_for(_graph_of(resolved, tenant))
    nodes: list[dict[str, Any]] = [{"id": "__start__", "type": "schema", "data": "__start__"}]
    edges: list[dict[str, Any]] = [{"source": "__start__", "target": spec.start}]
    for name, node in spec.nodes.items():
        nodes.append(
            {
                "id": name,
                "type": "runnable",
                "data": {"id": ["runyard", node.get("kind", "")], "name": name},
                "metadata": {"kind": node.get("kind")},
            }
        )
        if node.get("kind") == "end":
            edges.append({"source": name, "target": "__end__"})
    nodes.append({"id": "__end__", "type": "schema", "data": "__end__"})
    for edge in spec.edges:
        conditional = bool(edge.get("when") or edge.get("on_error"))
        item: dict[str, Any] = {
            "source": edge["from"],
            "target": edge["to"],
            "conditional": conditional,
        }
        if edge.get("when"):
            item["data"] = edge["when"]
        edges.append(item)
    return {"nodes": nodes, "edges": edges}


def _graph_of(resolved: Resolved, tenant: Tenant) -> Graph:
    if resolved.graph is not None:
        return resolved.graph
    rows = Graph.objects.for_tenant(tenant).filter(name=resolved.graph_name)
    if resolved.graph_version:
        rows = rows.filter(version=resolved.graph_version)
    graph = rows.order_by("-version").first()
    if graph is None:
        raise not_found("Graph", resolved.graph_name)
    return graph


def schemas(resolved: Resolved, tenant: Tenant) -> dict[str, Any]:
    spec = spec_for(_graph_of(resolved, tenant))
    properties = {
        key: {"default": spec.defaults.get(key), "reducer": reducer}
        for key, reducer in spec.reducers.items()
    }
    state = {"type": "object", "title": spec.name, "properties": properties}
    return {
        "graph_id": spec.name,
        "input_schema": spec.input_schema or {"type": "object"},
        "output_schema": state,
        "state_schema": state,
        "config_schema": None,
        "context_schema": None,
    }
