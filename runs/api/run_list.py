"""`GET /runs` written as JSON directly: the API's busiest read, and most of its time went to
building a model instance per run, decoding its JSON columns, validating each through RunOut
and encoding it all again.

Here the rows come as plain values, and `input`, `state` and `metadata` (the big ones) go from
the database's JSON text to the answer without being decoded: what was stored is valid JSON
(the database checked it on the way in). The answer is the same document RunOut/RunListOut
describe; tests/runs/test_api__run_list.py compares the two for runs in every shape.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import HttpResponse

from config.jsonenc import Encoder
from runs import selectors
from runs.checkpoints import current_states
from runs.models import Run
from runs.schemas import WaitingFor, error_info
from tenants.models import Tenant

# Passed through as stored: JSON text straight from the column.
RAW_JSON = ("input", "state", "metadata")
RAW = {f"{name}_json": Cast(name, TextField()) for name in RAW_JSON}
# The other columns RunOut reads, as plain values.
FIELDS = tuple(f for f in selectors.RUN_OUT_FIELDS if f not in (*RAW_JSON, "tenant_id"))

# WaitingFor's fields, as RunOut answers them: the optional ones filled in with their
# defaults, and other keys the run's waiting_for holds left out.
WAITING_FIELDS = {
    name: None if field.is_required() else field.default
    for name, field in WaitingFor.model_fields.items()
}

_encoder = Encoder()


def _uuid(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> str | None:
    return None if value is None else _encoder.default(value)


def _waiting(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {name: value.get(name, default) for name, default in WAITING_FIELDS.items()}


def _item(row: dict[str, Any]) -> str:
    waiting = row["waiting_for"]
    cost = row["cost_usd"]
    head = {
        "id": _uuid(row["public_id"]),
        "status": row["status"],
        "graph": row["graph__name"],
        "version": row["graph__version"],
        "thread_id": _uuid(row["thread__public_id"]),
        "error": error_info(row["error"]),
        "usage": {
            "steps": row["steps"],
            "tokens_in": row["tokens_in"],
            "tokens_out": row["tokens_out"],
            "cost_usd": float(cost) if isinstance(cost, Decimal | int) else cost,
        },
        "waiting_for": _waiting(waiting),
        "created_at": _time(row["created_at"]),
        "started_at": _time(row["started_at"]),
        "finished_at": _time(row["finished_at"]),
        "priority": row["priority"],
        "created_by": row["created_by"],
    }
    raw = ", ".join(f'"{name[:-5]}": {row[name]}' for name in RAW)
    return json.dumps(head, cls=Encoder)[:-1] + ", " + raw + "}"


def _catch_up(rows: list[dict[str, Any]]) -> None:
    """A running run's row may hold a state behind its last checkpoint (its steps write
    checkpoints, not the state): such rows get their current state, read from there."""
    behind = {row["pk"]: row for row in rows if row["state_behind"]}
    if behind:
        stubs = [Run(pk=pk, state_behind=True) for pk in behind]
        for pk, state in current_states(stubs).items():
            behind[pk]["state_json"] = json.dumps(state, cls=Encoder)


def run_list_response(
    tenant: Tenant, filters: selectors.RunFilters, *, cursor: str | None, limit: int
) -> HttpResponse:
    page = selectors.run_values_page(
        tenant, filters, cursor=cursor, limit=limit, fields=FIELDS, expressions=RAW
    )
    _catch_up(page.items)
    items = ", ".join(_item(row) for row in page.items)
    body = f'{{"items": [{items}], "next_cursor": {json.dumps(page.next_cursor)}}}'
    return HttpResponse(body, content_type="application/json; charset=utf-8")
