"""`POST /api/v1/events`: what a sender posts and what it gets back."""

from __future__ import annotations

import uuid
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field

from runs.engine.subscriptions import EVENT_NAME
from runs.schemas import BodyIn


class ReceivedEventIn(BodyIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "order.created", "payload": {"order": 42}, "id": "evt-2026-0001"}]
        },
    )

    name: str = Field(
        ...,
        min_length=1,
        max_length=100,
        pattern=EVENT_NAME.pattern,
        description="The event's name, as graphs subscribe to it in `triggers`.",
    )
    payload: Any = Field(
        default_factory=dict,
        description="The run input of every graph started (or what its trigger's `input` "
        "expressions read as `payload`).",
    )
    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id for this event: a repeated id starts nothing new.",
    )


class StartedRunOut(Schema):
    run_id: uuid.UUID
    graph: str
    version: int


class RefusedOut(Schema):
    graph: str
    code: str = Field(..., description="Why, e.g. `limit_exceeded.max_queued_runs`.")
    message: str


class ReceivedEventOut(Schema):
    id: uuid.UUID = Field(
        ..., description="The received event's id (runs carry it in `metadata.event_id`)."
    )
    event_id: str | None = Field(..., description="The sender's id, when it gave one.")
    name: str
    duplicate: bool = Field(
        ...,
        description="True when this id was received before: nothing new was started, and "
        "`runs`/`refused` are the first delivery's.",
    )
    runs: list[StartedRunOut]
    refused: list[RefusedOut]
