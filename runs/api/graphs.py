"""Graphs: immutable, validated versions of named specs."""

from __future__ import annotations

import functools
import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Path, Query, Router, Status

from runs import selectors, services
from runs.api.common import admin, caller, ensure_body_size
from runs.engine import specschema
from runs.models import Graph
from runs.schemas import (
    NO_NUL,
    GraphListOut,
    GraphOut,
    GraphSpecIn,
    GraphVersionOut,
    PageIn,
    ValidationOut,
)
from runs.services.graphs import parse_or_fail
from tenants.schemas import error_responses

router = Router(tags=["graphs"])

# Graph names are stored in a 100-character column.
MAX_NAME_LENGTH = 100


@router.get(
    "/schemas/graph-spec.json",
    auth=None,
    response={200: None},
    summary="The graph spec's JSON Schema",
    description=(
        "JSON Schema (draft 2020-12) of a graph spec, generated from the node kinds' own "
        "field definitions: nodes are a union discriminated on `kind`, every field typed with "
        "its bounds, expressions and templates marked by `contentMediaType`. Name it in a "
        'spec as `"$schema"` for editors to complete and check it (validation ignores the '
        "key). Public: it holds no tenant data."
    ),
    openapi_extra={
        "responses": {
            200: {
                "description": "The JSON Schema.",
                "content": {
                    "application/schema+json": {"schema": {"type": "object"}},
                },
            }
        }
    },
)
def get_graph_spec_schema(request: HttpRequest) -> HttpResponse:
    document = _spec_schema(request.build_absolute_uri(specschema.PUBLISHED_PATH))
    response = HttpResponse(document, content_type="application/schema+json")
    response["Cache-Control"] = "public, max-age=300"
    return response


@functools.lru_cache(maxsize=8)
def _spec_schema(schema_id: str) -> str:
    # Kinds and providers register at import, so the schema is fixed for a process.
    return json.dumps(
        specschema.graph_spec_schema(schema_id=schema_id, name_max_length=MAX_NAME_LENGTH)
    )


def _check_spec(request: HttpRequest, spec: GraphSpecIn) -> dict[str, Any]:
    ensure_body_size(request, "spec", limit_setting="MAX_SPEC_BYTES")
    raw = spec.raw()
    name = raw.get("name")
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise services.ValidationFailed(
            f"The graph spec is invalid: name: must be at most {MAX_NAME_LENGTH} characters",
            code="invalid_graph",
            details={
                "problems": [
                    {"where": "name", "message": f"must be at most {MAX_NAME_LENGTH} characters"}
                ]
            },
        )
    return raw


@router.post(
    "/graphs",
    response={200: GraphVersionOut, 201: GraphVersionOut, **error_responses(400, 403, 413)},
    summary="Store a new version of a graph",
    description=(
        "The body is the graph spec (DESIGN §3). It is validated before anything is stored; "
        "each problem names its node, edge or field (422 `invalid_graph`, "
        "`details.problems`). A valid spec becomes the next version of the graph it names "
        "(201); the same spec as the latest version returns that version (200). "
        "Needs the admin role. Specs are limited to `MAX_SPEC_BYTES` (1 MB; 413)."
    ),
)
def create_graph(request: HttpRequest, spec: GraphSpecIn) -> Status[Graph]:
    ctx = admin(request)
    raw = _check_spec(request, spec)
    started = timezone.now()
    graph = services.create_graph_version(ctx.tenant, raw, by=ctx.actor_label)
    return Status(201 if graph.created_at >= started else 200, graph)


# Declared before `/graphs/{name}`: URL patterns match in order, and `validate` would
# otherwise be taken for a graph's name.
@router.post(
    "/graphs/validate",
    response={200: ValidationOut, **error_responses(400, 413)},
    summary="Validate a graph spec",
    description=(
        "Checks a spec without storing it: `{valid, problems: [{where, message}]}`, every "
        "problem at once. Writes nothing, so any role may call it."
    ),
)
def validate_graph(request: HttpRequest, spec: GraphSpecIn) -> dict[str, Any]:
    caller(request)
    try:
        parse_or_fail(_check_spec(request, spec))
    except services.ValidationFailed as exc:
        return {"valid": False, "problems": exc.details.get("problems", [])}
    return {"valid": True, "problems": []}


@router.get(
    "/graphs",
    response={200: GraphListOut, **error_responses(400)},
    summary="List graphs",
    description=(
        "The latest version of each graph, by name, with cursor pagination (400 "
        "`invalid_cursor` for a cursor no list returned)."
    ),
)
def list_graphs(request: HttpRequest, page: Query[PageIn]) -> selectors.Page[Graph]:
    ctx = caller(request)
    return selectors.graph_page(ctx.tenant, cursor=page.cursor, limit=page.limit)


@router.get(
    "/graphs/{name}",
    response={200: GraphOut, **error_responses(404)},
    summary="Get a graph",
    description="The latest version of the graph, its spec, and the numbers of all versions.",
)
def get_graph(request: HttpRequest, name: str = Path(..., max_length=200, pattern=NO_NUL)) -> Graph:
    ctx = caller(request)
    graph = services.get_graph(ctx.tenant, name)
    graph.versions = selectors.graph_versions(ctx.tenant, name)  # type: ignore[attr-defined]
    return graph


@router.get(
    "/graphs/{name}/versions/{version}",
    response={200: GraphVersionOut, **error_responses(404)},
    summary="Get one version of a graph",
)
def get_graph_version(
    request: HttpRequest,
    name: str = Path(..., max_length=200, pattern=NO_NUL),
    version: int = Path(..., ge=1, le=2**31 - 1),
) -> Graph:
    ctx = caller(request)
    return services.get_graph(ctx.tenant, name, version)
