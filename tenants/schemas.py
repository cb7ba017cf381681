"""API schemas of the tenants app, and the error envelope every router documents."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ninja import Field, Schema

# --- errors --------------------------------------------------------------------------------------

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: the body is not valid JSON (`malformed_json`) or holds a value "
    "that cannot be stored, such as U+0000 (`invalid_json_value`), or a cursor the list never "
    "returned (`invalid_cursor`).",
    401: "Missing or invalid credentials: send `Authorization: Bearer <key>` or a session.",
    403: "The caller's role does not allow this, the session's CSRF check failed, "
    "or a pre-run hook refused the run.",
    404: "No such object in the caller's tenant (other tenants' objects are never visible).",
    409: "Conflict with the object's current state.",
    413: "The body, run input or graph spec is larger than allowed.",
    422: "Invalid parameters or body; `details.problems` names each field or graph node.",
    429: "A tenant limit refused the request; retry after `Retry-After` seconds.",
}


class ErrorBody(Schema):
    code: str = Field(
        ...,
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$",
        description="Stable machine-readable code, e.g. `invalid_graph` or "
        "`limit_exceeded.max_tokens`.",
        examples=["thread_busy"],
    )
    message: str = Field(..., description="What went wrong, for humans.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Structured context, e.g. `problems` or `limit`."
    )


class ErrorOut(Schema):
    """Every error response: `{"error": {"code", "message", "details"}}`."""

    error: ErrorBody


def error_responses(*codes: int) -> dict[int, Any]:
    """Response declarations for `codes`, plus 401 and 422 which any operation can answer."""
    return {code: ErrorOut for code in sorted({401, 422, *codes})}


# --- usage ----------------------------------------------------------------------------------------


class TenantRef(Schema):
    id: uuid.UUID
    slug: str
    name: str


class ModelUsageOut(Schema):
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class PeriodUsageOut(Schema):
    start: dt.date = Field(..., description="First day of the period (UTC).")
    resets_at: dt.datetime = Field(..., description="When the period's budgets reset.")
    runs: int
    steps: int
    tokens: int = Field(..., description="Input plus output tokens.")
    cost_usd: float
    token_budget: int | None = Field(None, description="null: unlimited.")
    cost_budget_usd: float | None = Field(None, description="null: unlimited.")
    models: list[ModelUsageOut] = Field(..., description="Usage per LLM model in the period.")


class CurrentOut(Schema):
    running: int = Field(..., description="Runs holding a `max_concurrent_runs` slot.")
    queued: int = Field(..., description="Runs holding a `max_queued_runs` slot.")


class LimitsOut(Schema):
    max_concurrent_runs: int
    max_queued_runs: int
    runs_per_minute: int | None
    max_steps: int | None
    max_tokens: int | None
    max_cost_usd: float | None
    max_wall_seconds: int | None
    max_state_bytes: int | None
    max_child_runs: int | None
    max_resurrections: int = Field(
        ..., description="Resurrections per run: the default, and the most a spec may ask for."
    )
    daily_token_budget: int | None
    monthly_token_budget: int | None
    daily_cost_budget_usd: float | None
    monthly_cost_budget_usd: float | None
    warn_ratio: float
    http_allowed_hosts: list[str]
    http_allow_private: bool


class UsageOut(Schema):
    tenant: TenantRef
    day: PeriodUsageOut
    month: PeriodUsageOut
    current: CurrentOut
    limits: LimitsOut = Field(..., description="The tenant's limits; null means unlimited.")
