"""API schemas of schedules (`/api/v1/crons`): what is accepted and how a schedule reads."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from ninja import Field, Schema
from pydantic import ConfigDict

from runs.schemas import (
    NO_NUL,
    URL_PATTERN,
    BodyIn,
    DateTimeIn,
    MultitaskStrategy,
    cursor_field,
    next_cursor_field,
)
from schedules.cronexpr import MAX_EXPRESSION_CHARS, MAX_TIMEZONE_CHARS
from schedules.models import Cron, CronFire
from schedules.selectors import recent_fires
from webhooks.models import URL_MAX_LENGTH

FireOutcomeName = Literal["started", "refused", "failed"]
# A webhook URL, or empty for none.
OPTIONAL_URL_PATTERN = f"^(?:{URL_PATTERN[1:-1]})?$"

EXAMPLE: dict[str, Any] = {
    "graph": "support-triage",
    "input": {"text": "daily digest"},
    "schedule": "0 9 * * 1-5",
    "timezone": "Europe/Paris",
    "metadata": {"team": "support"},
}


class CronIn(BodyIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    graph: str = Field(..., min_length=1, max_length=100, description="The graph's name.")
    version: int | None = Field(
        None,
        ge=1,
        le=2_147_483_647,
        description="A stored version; default the latest at each fire.",
    )
    input: dict[str, Any] = Field(
        default_factory=dict, description="Each run's input; checked against the graph now."
    )
    schedule: str = Field(
        ...,
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
        description="Cron expression, five fields (minute hour day month weekday), or "
        "@hourly, @daily, @weekly, @monthly, @yearly; one that croniter refuses or that "
        "never fires is a 422 `invalid_schedule`.",
        examples=["*/15 * * * *"],
    )
    timezone: str = Field(
        "UTC",
        min_length=1,
        max_length=MAX_TIMEZONE_CHARS,
        description="IANA zone name; one the zone database does not know is a 422 "
        "`invalid_timezone`.",
    )
    thread_id: uuid.UUID | None = Field(None, description="Run on this thread's state.")
    enabled: bool = True
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Copied to each run's metadata, with `cron_id`."
    )
    priority: int = Field(3, ge=1, le=5, description="Priority of the runs it starts (1-5).")
    multitask_strategy: MultitaskStrategy = Field(
        "reject", description="When the thread already has an active run at a tick."
    )
    end_time: DateTimeIn | None = Field(
        None,
        description="No tick after this fires; then the schedule disables itself. Before "
        "the first tick it is a 422 `end_time_before_first_tick`.",
    )
    webhook: str | None = Field(
        None,
        max_length=URL_MAX_LENGTH,
        pattern=OPTIONAL_URL_PATTERN,
        description="Each run's webhook (as `webhook` on POST /runs); the tenant's HTTP "
        "allow-list applies, now (422 `webhook_refused`) and at every fire. Empty: none.",
    )


class CronPatchIn(BodyIn):
    """Only the fields sent change. `version: null` follows the latest version again;
    `thread_id: null` detaches the schedule from its thread; `end_time: null` and
    `webhook: null` remove them."""

    graph: str | None = Field(None, min_length=1, max_length=100)
    version: int | None = Field(None, ge=1, le=2_147_483_647)
    input: dict[str, Any] | None = None
    schedule: str | None = Field(None, min_length=1, max_length=MAX_EXPRESSION_CHARS)
    timezone: str | None = Field(None, min_length=1, max_length=MAX_TIMEZONE_CHARS)
    thread_id: uuid.UUID | None = None
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    priority: int | None = Field(None, ge=1, le=5)
    multitask_strategy: MultitaskStrategy | None = None
    end_time: DateTimeIn | None = None
    webhook: str | None = Field(None, max_length=URL_MAX_LENGTH, pattern=OPTIONAL_URL_PATTERN)

    def changes(self) -> dict[str, Any]:
        """What was sent; nulls only where null means something (version, thread_id)."""
        sent = self.model_dump(exclude_unset=True)
        for key in list(sent):
            if sent[key] is None and key not in ("version", "thread_id", "end_time", "webhook"):
                del sent[key]
        if "thread_id" in sent and sent["thread_id"] is not None:
            sent["thread_id"] = str(sent["thread_id"])
        return sent


class FireError(Schema):
    code: str
    message: str


class CronFireOut(Schema):
    tick: dt.datetime = Field(..., description="The tick fired (UTC).")
    fired_at: dt.datetime
    outcome: FireOutcomeName = Field(..., description="started, refused or failed.")
    run_id: uuid.UUID | None
    error: FireError | None

    @staticmethod
    def resolve_run_id(obj: CronFire) -> uuid.UUID | None:
        return obj.run.public_id if obj.run is not None else None


class CronOut(Schema):
    id: uuid.UUID
    graph: str
    version: int | None = Field(..., description="Null: the latest version at each fire.")
    input: dict[str, Any]
    schedule: str
    timezone: str
    thread_id: uuid.UUID | None
    enabled: bool
    metadata: dict[str, Any]
    priority: int
    multitask_strategy: MultitaskStrategy
    end_time: dt.datetime | None
    webhook: str | None
    next_run_at: dt.datetime | None = Field(
        ..., description="The next tick (UTC); null when disabled."
    )
    last_fired_at: dt.datetime | None
    last_run_id: uuid.UUID | None
    last_outcome: FireOutcomeName | None
    last_error: FireError | None = Field(
        ..., description="Why the last fire started no run; null after a fire that did."
    )
    fire_count: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @staticmethod
    def resolve_id(obj: Cron) -> uuid.UUID:
        return obj.public_id

    @staticmethod
    def resolve_graph(obj: Cron) -> str:
        return obj.graph_name

    @staticmethod
    def resolve_version(obj: Cron) -> int | None:
        return obj.graph_version

    @staticmethod
    def resolve_thread_id(obj: Cron) -> uuid.UUID | None:
        return obj.thread.public_id if obj.thread is not None else None

    @staticmethod
    def resolve_last_run_id(obj: Cron) -> uuid.UUID | None:
        return obj.last_run.public_id if obj.last_run is not None else None

    @staticmethod
    def resolve_webhook(obj: Cron) -> str | None:
        return obj.webhook or None

    @staticmethod
    def resolve_last_outcome(obj: Cron) -> str | None:
        return obj.last_outcome or None


class CronDetailOut(CronOut):
    fires: list[CronFireOut] = Field(..., description="The latest fires, newest first.")

    @staticmethod
    def resolve_fires(obj: Cron) -> list[CronFire]:
        return recent_fires(obj)


class CronListOut(Schema):
    items: list[CronOut]
    next_cursor: str | None = next_cursor_field()


class CronFiltersIn(Schema):
    graph: str | None = Field(
        None, max_length=100, pattern=NO_NUL, description="Only schedules of this graph."
    )
    enabled: bool | None = Field(None, description="Only enabled (or disabled) schedules.")
    cursor: str | None = cursor_field()
    limit: int = Field(50, ge=1, le=200, description="Items per page.")
