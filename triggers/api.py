"""Events over the API: `POST /api/v1/events` starts the graphs subscribed to an event."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from runs.api.common import ensure_json_size, member
from tenants.schemas import error_responses
from triggers import services
from triggers.schemas import ReceivedEventIn, ReceivedEventOut

router = Router(tags=["events"])


@router.post(
    "/events",
    response={202: ReceivedEventOut, **error_responses(400, 403, 413)},
    summary="Send an event",
    description=(
        "Starts a run of the latest version of every graph of the tenant whose spec "
        "subscribes to `name` (`triggers`), each through the tenant's limits like any run, "
        "and answers 202 with the runs started and the refusals (graph, code, message). "
        "A repeated `id` starts nothing new (`duplicate: true`, with the first delivery's "
        "runs). The payload is limited to `MAX_INPUT_BYTES` (413). Needs the member role."
    ),
)
def send_event(request: HttpRequest, payload: ReceivedEventIn) -> Status[dict[str, Any]]:
    ctx = member(request)
    ensure_json_size(payload.payload, "payload")
    received = services.receive_event(
        ctx.tenant,
        name=payload.name,
        payload=payload.payload,
        event_id=payload.id or "",
        by=ctx.actor_label,
    )
    event = received.event
    return Status(
        202,
        {
            "id": event.public_id,
            "event_id": event.event_id or None,
            "name": event.name,
            "duplicate": received.duplicate,
            "runs": received.started,
            "refused": received.refused,
        },
    )
