"""Websocket streams: a run's event log (`run.py`), a tenant's run lifecycle (`tenant.py`), and
what both share: auth, re-authorisation, the feed's inbox, the bounded outbox (`base.py`)."""

from runs.consumers.base import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHENTICATED,
    FLOW_SCOPE_KEY,
    SendFlow,
    StreamConsumer,
    parse_after,
)
from runs.consumers.run import RunStreamConsumer
from runs.consumers.tenant import TenantStreamConsumer

__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_FORBIDDEN",
    "CLOSE_NOT_FOUND",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHENTICATED",
    "FLOW_SCOPE_KEY",
    "RunStreamConsumer",
    "SendFlow",
    "StreamConsumer",
    "TenantStreamConsumer",
    "parse_after",
]
