"""Graph versions: validated before they exist, immutable once they do."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Max

from runs.engine import GraphSpec, SpecError, parse_spec
from runs.engine.nodes.subgraph import MAX_DEPTH_CEILING
from runs.engine.subscriptions import spec_concurrency, spec_triggers
from runs.models import Graph
from runs.services.errors import NotFound, ValidationFailed
from tenants import limits
from tenants.models import Tenant
from triggers.subscriptions import subscribe_version

GRAPH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RESERVED_NAMES = frozenset({"validate"})  # POST /graphs/validate owns that path

# Parsed specs by hash. Versions are immutable and content-addressed, so a process-local cache
# cannot go stale.
_SPECS: dict[str, GraphSpec] = {}


def problems_to_details(problems: list[Any]) -> dict[str, Any]:
    return {"problems": [{"where": p.where, "message": p.message} for p in problems]}


def parse_or_fail(data: Any) -> GraphSpec:
    try:
        return parse_spec(data)
    except SpecError as exc:
        names = "; ".join(f"{p.where}: {p.message}" for p in exc.problems[:5])
        raise ValidationFailed(
            f"The graph spec is invalid: {names}",
            code="invalid_graph",
            details=problems_to_details(exc.problems),
        ) from exc


def spec_for(graph: Graph) -> GraphSpec:
    spec = _SPECS.get(graph.hash)
    if spec is None:
        spec = _SPECS[graph.hash] = _parse_stored(graph.spec)
    return spec


def _parse_stored(raw: Any) -> GraphSpec:
    """A stored version may predate the max_depth ceiling: it still parses (its runs must
    stay startable) and keeps its stored value; the tenant gate refuses any child past the
    ceiling with `limit_exceeded.max_depth` (runs/services/subgraphs.py)."""
    depth = raw.get("max_depth") if isinstance(raw, dict) else None
    if not isinstance(depth, int) or depth <= MAX_DEPTH_CEILING:
        return parse_spec(raw, stored=True)
    spec = parse_spec({**raw, "max_depth": MAX_DEPTH_CEILING}, stored=True)
    return dataclasses.replace(spec, raw={**spec.raw, "max_depth": depth}, max_depth=depth)


def create_graph_version(tenant: Tenant, data: Any, *, by: str = "") -> Graph:
    """Validate `data` and store it as the next version of the graph it names.

    Storing the same spec as the latest version again returns that version unchanged.
    """
    spec = parse_or_fail(data)
    if not GRAPH_NAME.fullmatch(spec.name) or spec.name in RESERVED_NAMES:
        raise ValidationFailed(
            f"Graph name {spec.name!r} must be 1-100 letters, digits, '.', '_' or '-', start "
            f"with a letter or digit, and not be one of {sorted(RESERVED_NAMES)}.",
            code="invalid_graph",
            details={"problems": [{"where": "name", "message": "invalid graph name"}]},
        )
    for _ in range(5):
        latest = (
            Graph.objects.for_tenant(tenant).filter(name=spec.name).order_by("-version").first()
        )
        if latest is not None and latest.hash == spec.hash:
            return latest
        version = (latest.version if latest else 0) + 1
        try:
            with transaction.atomic():
                # The newest version's limits and triggers are the graph's.
                slots = limits.graph_limit_for(tenant.pk, spec.name, cap=spec_concurrency(spec.raw))
                graph = Graph.objects.create(
                    tenant=tenant,
                    name=spec.name,
                    version=version,
                    spec=spec.raw,
                    hash=spec.hash,
                    created_by=by,
                    limit=slots,
                )
                subscribe_version(graph, spec_triggers(spec.raw))
        except IntegrityError:
            continue  # another request took this version number; take the next one
        _SPECS[spec.hash] = spec
        return graph
    raise ValidationFailed("Could not allocate a graph version; try again.", code="conflict")


def get_graph(tenant: Tenant, name: str, version: int | None = None) -> Graph:
    """The tenant's graph `name` at `version` (default: the latest). Every run start asks, so
    the id is looked up in plain SQL and the row (immutable once written) kept per process."""
    q = connection.ops.quote_name
    sql = (
        f"SELECT {q('id')}, {q('hash')}, {q('version')} FROM {q(Graph._meta.db_table)} "  # noqa: S608 - names from model meta
        f"WHERE {q('tenant_id')} = %s AND {q('name')} = %s"
    )
    params: list[Any] = [tenant.pk, name]
    if version:
        sql += f" AND {q('version')} = %s"
        params.append(version)
    with connection.cursor() as cursor:
        cursor.execute(sql + f" ORDER BY {q('version')} DESC LIMIT 1", params)
        row = cursor.fetchone()
    if row is None:
        raise graph_not_found(tenant, name, version)
    return _graph_row(row[0], tenant.pk, row[1], row[2])


# An unknown graph's 404 names at most this many of the tenant's graphs.
KNOWN_GRAPHS_SHOWN = 10


def graph_not_found(tenant: Tenant, name: str, version: int | None) -> NotFound:
    """A 404 a person can act on: the versions of `name` when only the version is wrong, else
    the names (the first few, alphabetically) of the graphs the tenant does have."""
    graphs = Graph.objects.for_tenant(tenant)
    versions = list(graphs.filter(name=name).order_by("version").values_list("version", flat=True))
    if versions:
        listed = ", ".join(str(v) for v in versions[-KNOWN_GRAPHS_SHOWN:])
        return NotFound(
            f"Graph {name} has no version {version}; its versions are {listed}.",
            details={"graph": name, "versions": versions[-KNOWN_GRAPHS_SHOWN:]},
        )
    names = list(
        graphs.order_by("name").values_list("name", flat=True).distinct()[: KNOWN_GRAPHS_SHOWN + 1]
    )
    shown, more = names[:KNOWN_GRAPHS_SHOWN], len(names) > KNOWN_GRAPHS_SHOWN
    what = f"{name}@{version}" if version else name
    if not shown:
        hint = "This tenant has no graphs yet: create one with POST /api/v1/graphs."
    else:
        hint = "Graphs here: " + ", ".join(shown) + (", and more" if more else "") + "."
    return NotFound(f"Graph {what} does not exist. {hint}", details={"graphs": shown, "more": more})


@functools.lru_cache(maxsize=1024)
def _graph_row(pk: int, tenant_id: int, spec_hash: str, version: int) -> Graph:
    """Keyed by more than the pk, so a row id reused after a rollback (tests) never hits."""
    return Graph.objects.get(pk=pk, tenant_id=tenant_id, hash=spec_hash, version=version)


def latest_versions(tenant: Tenant) -> list[Graph]:
    latest = Graph.objects.for_tenant(tenant).values("name").annotate(v=Max("version"))
    wanted = {(row["name"], row["v"]) for row in latest}
    rows = Graph.objects.for_tenant(tenant).filter(name__in=[n for n, _ in wanted])
    return [g for g in rows.order_by("name") if (g.name, g.version) in wanted]
