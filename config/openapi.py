"""What the OpenAPI document says beyond what ninja derives from the routers.

- The graph spec's JSON Schema (runs/engine/specschema.py, generated from the node kinds' field
  tables) as components `GraphSpec` and `GraphSpec_<part>`, and as the request body of the
  operations that take a spec.
- Error responses described per status (tenants.schemas.ERROR_DESCRIPTIONS): every router
  declares them with `error_responses(...)`; this fills in what each status means.
- OpenAPI links, so a client (and schemathesis' stateful tests) can go from a created run to
  its steps, events, artifacts, approvals, input and controls, from a thread to its
  checkpoints, and from a schedule or a webhook subscription to its operations, with real ids.
"""

from __future__ import annotations

from typing import Any

from runs.api.graphs import MAX_NAME_LENGTH
from runs.engine import specschema
from runs.schemas import EXAMPLE_SPEC
from tenants.schemas import ERROR_DESCRIPTIONS

GRAPH_SPEC = "GraphSpec"
_PREFIX = f"#/components/schemas/{GRAPH_SPEC}_"

# Operations whose body is a graph spec: POST /graphs stores only a valid one; validation
# reports on any JSON object.
SPEC_BODIES = {
    "create_graph": {"$ref": f"#/components/schemas/{GRAPH_SPEC}"},
    "validate_graph": {
        "anyOf": [{"$ref": f"#/components/schemas/{GRAPH_SPEC}"}, {"type": "object"}],
        "description": (
            "A graph spec, checked against `GraphSpec` and the rules a schema cannot state; "
            "any JSON object is accepted and its problems reported."
        ),
    },
}


def _run_links() -> dict[str, Any]:
    run_id = {"run_id": "$response.body#/id"}
    targets = {
        "GetRun": ("get_run", "The run."),
        "WaitForRun": ("wait_for_run", "Wait until it settles."),
        "ListSteps": ("list_steps", "Its steps."),
        "ListEvents": ("list_events", "Its events."),
        "StreamEvents": ("stream_events", "Its events, live."),
        "ListArtifacts": ("list_artifacts", "What its nodes stored."),
        "CancelRun": ("cancel_run", "Cancel it."),
        "PauseRun": ("pause_run", "Pause it."),
        "ResumeRun": ("resume_run", "Resume it."),
        "RetryRun": ("retry_run", "Retry it."),
        "AddGuidance": ("add_guidance", "Send it guidance."),
        "SubmitInput": ("submit_input", "Answer its input request."),
    }
    links: dict[str, Any] = {
        name: {"operationId": op, "parameters": dict(run_id), "description": text}
        for name, (op, text) in targets.items()
    }
    links["DecideApproval"] = {
        "operationId": "decide_approval",
        "parameters": {
            **run_id,
            "approval_id": "$response.body#/waiting_for/id",
        },
        "description": "Answer the approval it waits for.",
    }
    return links


def _thread_links() -> dict[str, Any]:
    thread_id = {"thread_id": "$response.body#/id"}
    return {
        "GetThread": {"operationId": "get_thread", "parameters": dict(thread_id)},
        "ListCheckpoints": {"operationId": "list_checkpoints", "parameters": dict(thread_id)},
    }


def _graph_links() -> dict[str, Any]:
    return {
        "StartRun": {
            "operationId": "create_run",
            "requestBody": {"graph": "$response.body#/name", "version": "$response.body#/version"},
            "description": "Start a run of this version.",
        },
        "GetGraph": {"operationId": "get_graph", "parameters": {"name": "$response.body#/name"}},
        "GetGraphVersion": {
            "operationId": "get_graph_version",
            "parameters": {"name": "$response.body#/name", "version": "$response.body#/version"},
        },
    }


def _cron_links() -> dict[str, Any]:
    cron_id = {"cron_id": "$response.body#/id"}
    return {
        "GetCron": {"operationId": "get_cron", "parameters": dict(cron_id)},
        "UpdateCron": {
            "operationId": "update_cron",
            "parameters": dict(cron_id),
            "description": "Change it.",
        },
        "DeleteCron": {
            "operationId": "delete_cron",
            "parameters": dict(cron_id),
            "description": "Delete it.",
        },
    }


def _webhook_links() -> dict[str, Any]:
    webhook_id = {"webhook_id": "$response.body#/id"}
    return {
        "GetWebhook": {"operationId": "get_webhook", "parameters": dict(webhook_id)},
        "UpdateWebhook": {
            "operationId": "update_webhook",
            "parameters": dict(webhook_id),
            "description": "Change it.",
        },
        "ListWebhookDeliveries": {
            "operationId": "list_webhook_deliveries",
            "parameters": dict(webhook_id),
            "description": "Its deliveries.",
        },
        "DeleteWebhook": {
            "operationId": "delete_webhook",
            "parameters": dict(webhook_id),
            "description": "Delete it.",
        },
    }


# Operations that answer with the run: from there, all of the run's operations.
_RUN_ANSWERS = (
    "get_run",
    "wait_for_run",
    "cancel_run",
    "pause_run",
    "resume_run",
    "retry_run",
    "submit_input",
    "add_guidance",
    "decide_approval",
)

# operationId -> {status: links}
LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "create_run": {"200": _run_links(), "201": _run_links()},
    **{op: {"200": _run_links()} for op in _RUN_ANSWERS},
    "list_runs": {
        "200": {
            "GetFirstRun": {
                "operationId": "get_run",
                "parameters": {"run_id": "$response.body#/items/0/id"},
            }
        }
    },
    "create_thread": {"201": _thread_links()},
    "get_thread": {"200": _thread_links()},
    "create_graph": {"200": _graph_links(), "201": _graph_links()},
    "get_graph": {"200": _graph_links()},
    "list_graphs": {
        "200": {
            "GetFirstGraph": {
                "operationId": "get_graph",
                "parameters": {"name": "$response.body#/items/0/name"},
            },
            "StartRunOfFirstGraph": {
                "operationId": "create_run",
                "requestBody": {"graph": "$response.body#/items/0/name"},
                "description": "Start a run of the first graph listed.",
            },
        }
    },
    "create_cron": {"201": _cron_links()},
    "get_cron": {"200": _cron_links()},
    "update_cron": {"200": _cron_links()},
    "list_crons": {
        "200": {
            "GetFirstCron": {
                "operationId": "get_cron",
                "parameters": {"cron_id": "$response.body#/items/0/id"},
            }
        }
    },
    "create_webhook": {"201": _webhook_links()},
    "get_webhook": {"200": _webhook_links()},
    "update_webhook": {"200": _webhook_links()},
    "list_webhooks": {
        "200": {
            "GetFirstWebhook": {
                "operationId": "get_webhook",
                "parameters": {"webhook_id": "$response.body#/items/0/id"},
            }
        }
    },
    "list_artifacts": {
        "200": {
            "GetFirstArtifactContent": {
                "operationId": "get_artifact_content",
                "parameters": {"artifact_id": "$response.body#/items/0/id"},
            }
        }
    },
}


def graph_spec_components() -> dict[str, Any]:
    """`GraphSpec` and its parts, their references rewritten into the components."""
    components = {GRAPH_SPEC: specschema.root(name_max_length=MAX_NAME_LENGTH)}
    components[GRAPH_SPEC]["examples"] = [EXAMPLE_SPEC]
    for name, part in specschema.definitions().items():
        components[f"{GRAPH_SPEC}_{name}"] = part
    return specschema.with_refs(components, _PREFIX)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without ninja's `null` branch: query parameters and headers are
    strings on the wire; an optional one is left out (`required: false`), never "null"."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    if len(rest) != 1 or len(rest) == len(branches):
        return schema
    out = {k: v for k, v in schema.items() if k != "anyOf"}
    out.update(rest[0])
    return out


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Complete ninja's document in place (see the module docstring); returns it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(graph_spec_components())
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            op_id = str(operation.get("operationId", ""))
            for parameter in operation.get("parameters", []):
                if isinstance(parameter.get("schema"), dict):
                    parameter["schema"] = _without_null(parameter["schema"])
            body = SPEC_BODIES.get(op_id)
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
            for status, response in operation.get("responses", {}).items():
                code = str(status)
                described = ERROR_DESCRIPTIONS.get(int(code)) if code.isdigit() else None
                if described:
                    response["description"] = described
                links = LINKS.get(op_id, {}).get(code)
                if links:
                    response["links"] = links
    schemas.pop("GraphSpecIn", None)
    return document
